"""ipvlan on this machine: config validation, master resolution, DEL/STATUS behaviour and a
clear error when the kernel has no ipvlan. Creating links is exercised in the VM."""

import pytest
from kit import variant
from kit.kernel import kernel_has
from kit.pods import link_names as names
from kit.pods import netns_with_veth, run_in_host

STATIC = {"type": "static", "addresses": [{"address": "10.82.0.5/24"}]}
PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "mst0"}],
    "ips": [{"address": "10.82.0.9/24", "interface": 0}],
}


@pytest.fixture
def host(make_netns):
    return netns_with_veth(make_netns, "ivh")


def conf(**extra):
    base = {
        "cniVersion": "1.0.0",
        "name": "ivnet",
        "type": "ipvlan",
        "master": "mst0",
        "ipam": STATIC,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def run(plugin_dir, host, command, config, **kw):
    return run_in_host(plugin_dir, "ipvlan", host, command, config, **kw)


@pytest.fixture(params=["source", "go"])
def any_ipvlan(request):
    return request.getfixturevalue(f"{request.param}_bin")


def test_unknown_mode_is_rejected(any_ipvlan, host, netns):
    done = run(any_ipvlan, host, "ADD", conf(mode="l4"), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == 'unknown ipvlan mode: "l4"'
    assert names(netns) == ["lo"]


def test_chained_without_single_interface_is_rejected(any_ipvlan, host, netns):
    prev = dict(PREV, interfaces=[{"name": "a"}, {"name": "b"}])
    done = run(any_ipvlan, host, "ADD", conf(master=None, prevResult=prev), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "chained master failure. PrevResult lacks a single named interface"


def test_no_master_and_no_default_route_is_rejected(any_ipvlan, host, netns):
    done = run(any_ipvlan, host, "ADD", conf(master=None), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "no default route interface found"


def test_missing_master_is_rejected(any_ipvlan, host, netns):
    done = run(any_ipvlan, host, "ADD", conf(master="nosuch0"), pod=netns)
    assert done.returncode == 1
    assert names(netns) == ["lo"]


def test_addresses_are_required_up_front(plugin_dir, host, netns):
    done = run(plugin_dir, host, "ADD", conf(ipam=None), pod=netns)
    assert done.returncode == 1
    assert done.json["code"] == 7
    assert done.json["msg"].startswith("ipvlan needs addresses")


def test_mtu_above_master_is_rejected(plugin_dir, host, netns):
    done = run(plugin_dir, host, "ADD", conf(mtu=9000), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "invalid MTU 9000, must be [0, master MTU(1500)]"


@variant(kernel_has("ipvlan"), "this kernel has ipvlan")
def test_kernel_without_ipvlan_is_a_clear_error(plugin_dir, host, netns):
    done = run(plugin_dir, host, "ADD", conf(ipam=None, master=None, prevResult=PREV), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "failed to create ipvlan: operation not supported"
    assert "ipvlan module" in done.json["details"]
    assert names(netns) == ["lo"]


def test_del_needs_no_master_or_default_route(plugin_dir, host, netns, fake_ipam, tmp_path):
    config = conf(master=None, ipam={"type": fake_ipam.name})
    kw = fake_ipam.answering()
    for pod in (netns, str(tmp_path / "gone"), ""):
        done = run(plugin_dir, host, "DEL", config, pod=pod, **kw)
        assert done.returncode == 0, (pod, done)
    assert fake_ipam.calls() == ["DEL"] * 3


def test_chained_del_without_ipam_only_removes_the_link(plugin_dir, host, netns):
    done = run(plugin_dir, host, "DEL", conf(ipam=None, prevResult=PREV), pod=netns)
    assert done.returncode == 0, done


def test_status_reports_missing_master(plugin_dir, host):
    done = run(plugin_dir, host, "STATUS", conf(cniVersion="1.1.0", ipam=None, master="gone0"))
    assert done.returncode == 1
    assert done.json["code"] == 50
