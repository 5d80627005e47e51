"""tap, run like a runtime runs it, inside a test "host" netns; taps land in pod netns."""

import functools

import pytest
from conftest import ip_json, ns_exec
from kit.pods import (
    add_fails_after_ipam,
    add_refused_by_ipam,
    run_in_host,
    status_and_gc_forward_to_ipam,
)
from kit.pods import link_names as names

STATIC = {
    "type": "static",
    "addresses": [{"address": "10.79.0.5/24", "gateway": "10.79.0.1"}],
    "routes": [{"dst": "10.80.0.0/16"}],
}


@pytest.fixture
def host(make_netns):
    return make_netns("tph")


@pytest.fixture
def pod(make_netns):
    return make_netns("tpp")


def conf(**extra):
    base = {"cniVersion": "1.0.0", "name": "tapnet", "type": "tap"}
    base.update(extra)
    return base


def run(plugin_dir, host, command, config, **kw):
    return run_in_host(plugin_dir, "tap", host, command, config, **kw)


def link(netns, name="eth0"):
    found = ip_json(netns, "-d", "link", "show")
    return next((entry for entry in found if entry["ifname"] == name), None)


def tun_data(netns, name="eth0"):
    return link(netns, name)["linkinfo"]["info_data"]


# -- ADD -----------------------------------------------------------------------------------


def test_add_creates_persistent_tap_that_is_up(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(), pod=pod)
    assert done.returncode == 0, done
    created = link(pod)
    assert done.json == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": created["address"], "sandbox": pod}],
    }
    assert created["linkinfo"]["info_kind"] == "tun"
    data = created["linkinfo"]["info_data"]
    flags = (data["type"], data["persist"], data["pi"], data["vnet_hdr"])
    assert flags == ("tap", True, False, False)
    assert "UP" in created["flags"]
    assert names(pod) == ["eth0", "lo"]


def test_owner_and_group_create_a_vnet_hdr_tap_owned_by_them(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(owner=4242, group=4343), pod=pod)
    assert done.returncode == 0, done
    data = tun_data(pod)
    assert (str(data["user"]), str(data["group"]), data["vnet_hdr"]) == ("4242", "4343", True)


def test_owner_alone_sets_only_the_owner(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(owner=4242), pod=pod)
    assert done.returncode == 0, done
    data = tun_data(pod)
    assert str(data["user"]) == "4242"
    assert "group" not in data
    assert data["vnet_hdr"] is False


def test_multi_queue(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(multiQueue=True), pod=pod)
    assert done.returncode == 0, done
    assert tun_data(pod)["multi_queue"] is True


def test_mtu_and_mac_are_applied(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(mtu=1400, mac="0A:58:00:00:00:11"), pod=pod)
    assert done.returncode == 0, done
    created = link(pod)
    assert (created["mtu"], created["address"]) == (1400, "0a:58:00:00:00:11")
    assert done.json["interfaces"][0]["mac"] == "0a:58:00:00:00:11"


def test_mac_precedence_config_then_cni_args_then_runtime_config(plugin_dir, host, make_netns):
    args = "IgnoreUnknown=1;MAC=0a:58:00:00:00:02"
    first, second = make_netns("tpp"), make_netns("tpp")
    config = conf(mac="0a:58:00:00:00:01")
    assert run(plugin_dir, host, "ADD", config, pod=first, args=args).returncode == 0
    assert link(first)["address"] == "0a:58:00:00:00:02"
    config = conf(mac="0a:58:00:00:00:01", runtimeConfig={"mac": "0a:58:00:00:00:03"})
    assert run(plugin_dir, host, "ADD", config, pod=second, args=args).returncode == 0
    assert link(second)["address"] == "0a:58:00:00:00:03"


def test_invalid_mac_is_rejected_before_creating_anything(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(), pod=pod, args="MAC=01:02:03")
    assert done.returncode == 1
    assert done.json["msg"] == 'invalid MAC address "01:02:03" in CNI_ARGS MAC'
    assert names(pod) == ["lo"]


def test_negative_owner_is_rejected(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(owner=-1), pod=pod)
    assert done.returncode == 1
    assert done.json["code"] == 7


def test_bridge_in_pod_gets_the_tap_as_port(plugin_dir, host, pod):
    ns_exec(pod, "ip", "link", "add", "br0", "type", "bridge")
    done = run(plugin_dir, host, "ADD", conf(bridge="br0"), pod=pod)
    assert done.returncode == 0, done
    assert link(pod)["master"] == "br0"


def test_missing_bridge_fails_and_leaves_nothing(plugin_dir, host, pod):
    done = run(plugin_dir, host, "ADD", conf(bridge="br9"), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "failed to get bridge br9: link not found"
    assert names(pod) == ["lo"]


def test_selinux_context_without_selinux_fails_clearly(plugin_dir, host, pod):
    config = conf(selinuxContext="system_u:system_r:svirt_t:s0")
    done = run(plugin_dir, host, "ADD", config, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"].startswith("failed set socket label")
    assert names(pod) == ["lo"]


def test_existing_ifname_fails_and_leaves_nothing(plugin_dir, host, pod):
    ns_exec(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "other0")
    done = run(plugin_dir, host, "ADD", conf(), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == 'failed to rename tap to "eth0": file exists'
    assert names(pod) == ["eth0", "lo", "other0"]


def test_add_with_ipam_configures_addresses_routes_and_dns(plugin_dir, host, pod):
    config = conf(ipam=STATIC, dns={"nameservers": ["10.79.0.53"]})
    done = run(plugin_dir, host, "ADD", config, pod=pod)
    assert done.returncode == 0, done
    assert done.json["ips"] == [{"interface": 0, "address": "10.79.0.5/24", "gateway": "10.79.0.1"}]
    assert done.json["dns"] == {"nameservers": ["10.79.0.53"]}
    found = ip_json(pod, "-4", "addr", "show", "dev", "eth0")
    assert [a["local"] for entry in found for a in entry["addr_info"]] == ["10.79.0.5"]
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").strip() == "1"
    routes = ip_json(pod, "route", "show", "10.80.0.0/16")
    assert routes[0]["gateway"] == "10.79.0.1"


def test_ipam_failure_removes_the_tap(plugin_dir, host, pod, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    add_refused_by_ipam(functools.partial(run, plugin_dir, host), pod, config, fake_ipam)
    assert names(pod) == ["lo"]


def test_configure_failure_releases_ipam_and_removes_the_tap(plugin_dir, host, pod, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    add_fails_after_ipam(functools.partial(run, plugin_dir, host), pod, config, fake_ipam)
    assert names(pod) == ["lo"]


# -- DEL, CHECK, STATUS, GC ----------------------------------------------------------------


def test_del_removes_tap_and_releases_ipam(plugin_dir, host, pod, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    kw = dict(pod=pod, **fake_ipam.answering())
    assert run(plugin_dir, host, "ADD", config, **kw).returncode == 0
    done = run(plugin_dir, host, "DEL", config, **kw)
    assert done.returncode == 0, done
    assert names(pod) == ["lo"]
    assert fake_ipam.calls() == ["ADD", "DEL"]


def test_del_is_idempotent(plugin_dir, host, pod, tmp_path):
    assert run(plugin_dir, host, "ADD", conf(), pod=pod).returncode == 0
    for netns in (pod, pod, str(tmp_path / "gone"), ""):
        done = run(plugin_dir, host, "DEL", conf(), pod=netns)
        assert done.returncode == 0, (netns, done)


def test_check_passes_after_add_and_fails_without_the_tap(plugin_dir, host, pod):
    config = conf(ipam=STATIC)
    done = run(plugin_dir, host, "ADD", config, pod=pod)
    checked = dict(config, prevResult=done.json)
    assert run(plugin_dir, host, "CHECK", checked, pod=pod).returncode == 0
    ns_exec(pod, "ip", "link", "del", "eth0")
    failed = run(plugin_dir, host, "CHECK", checked, pod=pod)
    assert failed.returncode == 1
    assert failed.json["msg"] == "Container Interface name in prevResult: eth0 not found"


def test_check_requires_prev_result(plugin_dir, host, pod):
    done = run(plugin_dir, host, "CHECK", conf(), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "Required prevResult missing"


def test_status_and_gc_forward_to_ipam(plugin_dir, host, fake_ipam):
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    status_and_gc_forward_to_ipam(functools.partial(run, plugin_dir, host), config, fake_ipam)


def test_status_without_ipam_succeeds(plugin_dir, host):
    done = run(plugin_dir, host, "STATUS", conf(cniVersion="1.1.0"))
    assert done.returncode == 0, done
