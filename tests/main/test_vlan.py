"""vlan on this machine: config validation, DEL/STATUS behaviour, and a clear error when the
kernel has no 8021q. Creating vlan links is exercised in the VM (tests/kernel/test_kernel_vm.py)."""

import pytest
from kit import variant
from kit.kernel import kernel_has
from kit.pods import link_names as names
from kit.pods import netns_with_veth, run_in_host

STATIC = {"type": "static", "addresses": [{"address": "10.81.0.5/24"}]}


@pytest.fixture
def host(make_netns):
    return netns_with_veth(make_netns, "vlh")


def conf(**extra):
    base = {
        "cniVersion": "1.0.0",
        "name": "vlnet",
        "type": "vlan",
        "master": "mst0",
        "vlanId": 100,
        "ipam": STATIC,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def run(plugin_dir, host, command, config, **kw):
    return run_in_host(plugin_dir, "vlan", host, command, config, **kw)


@pytest.fixture(params=["source", "go"])
def any_vlan(request):
    """Validation behaviour shared with Debian's Go vlan 1.1.1."""
    return request.getfixturevalue(f"{request.param}_bin")


def test_master_is_required(any_vlan, host, netns):
    done = run(any_vlan, host, "ADD", conf(master=None), pod=netns)
    assert done.returncode == 1
    # Go 1.1.1 ends the sentence with a period, upstream today does not.
    assert done.json["msg"].startswith(
        '"master" field is required. It specifies the host interface name to create the VLAN for'
    )


@pytest.mark.parametrize("vlan_id", [-1, 4095])
def test_vlan_id_out_of_range_is_rejected(any_vlan, host, netns, vlan_id):
    done = run(any_vlan, host, "ADD", conf(vlanId=vlan_id), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"].startswith(f"invalid VLAN ID {vlan_id} (must be between 0 and 409")


def test_mtu_above_master_is_rejected(any_vlan, host, netns):
    done = run(any_vlan, host, "ADD", conf(mtu=9000), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "invalid MTU 9000, must be [0, master MTU(1500)]"


def test_missing_master_is_rejected(any_vlan, host, netns):
    done = run(any_vlan, host, "ADD", conf(master="nosuch0"), pod=netns)
    assert done.returncode == 1
    assert names(netns) == ["lo"]


def test_vlan_id_message_names_the_real_limit(source_bin, host, netns):
    done = run(source_bin, host, "ADD", conf(vlanId=5000), pod=netns)
    assert done.json["msg"] == "invalid VLAN ID 5000 (must be between 0 and 4094 inclusive)"
    assert done.json["code"] == 7


def test_ipam_is_required_before_anything_is_created(plugin_dir, host, netns):
    done = run(plugin_dir, host, "ADD", conf(ipam=None), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "vlan interface requires an IPAM configuration"
    assert names(netns) == ["lo"]


@variant(kernel_has("vlan", "id", "5"), "this kernel has 8021q")
def test_kernel_without_8021q_is_a_clear_error(plugin_dir, host, netns, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    done = run(plugin_dir, host, "ADD", config, pod=netns, **fake_ipam.answering())
    assert done.returncode == 1
    assert done.json["msg"] == "failed to create vlan: operation not supported"
    assert "8021q" in done.json["details"]
    assert names(netns) == ["lo"]
    assert fake_ipam.calls() == []


def test_del_needs_neither_master_nor_link(plugin_dir, host, netns, fake_ipam, tmp_path):
    config = conf(master="gone0", ipam={"type": fake_ipam.name})
    kw = fake_ipam.answering()
    for pod in (netns, netns, str(tmp_path / "gone"), ""):
        done = run(plugin_dir, host, "DEL", config, pod=pod, **kw)
        assert done.returncode == 0, (pod, done)
    assert fake_ipam.calls() == ["DEL"] * 4


def test_check_requires_prev_result(plugin_dir, host, netns, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    done = run(plugin_dir, host, "CHECK", config, pod=netns, **fake_ipam.answering())
    assert done.returncode == 1
    assert done.json["msg"] == "vlan: Required prevResult missing"
    assert fake_ipam.calls() == ["CHECK"]


def test_status_forwards_to_ipam_and_reports_missing_master(plugin_dir, host, fake_ipam):
    kw = fake_ipam.answering()
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    assert run(plugin_dir, host, "STATUS", config, **kw).returncode == 0
    done = run(plugin_dir, host, "STATUS", dict(config, master="gone0"), **kw)
    assert done.returncode == 1
    assert done.json["code"] == 50
    assert fake_ipam.calls() == ["STATUS", "STATUS"]
