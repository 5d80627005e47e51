"""Kernel behaviour tests for the link kinds this machine's kernel lacks: run INSIDE the VM
(tests/kernel/test_kernel_vm.py boots Debian's kernel and runs this file with pytest there).

Each test runs against our frozen executables and against Debian's Go plugins (`impl`), so
the tests are checked against the reference too, then compares the two where it matters.
Namespaces are created and removed by the usual conftest fixtures, inside the VM.
"""

import json

import pytest
from conftest import FROZEN_BIN, GO_BIN, ip_json, ns_exec, run_plugin

SUBNET = "10.85.0"


@pytest.fixture(params=["pycni", "go"])
def impl(request):
    return FROZEN_BIN if request.param == "pycni" else GO_BIN


@pytest.fixture
def host(make_netns):
    """A test "host" netns with a veth `mst0` (carrier up: its peer is up too) as master."""
    host = make_netns("vmh")
    ns_exec(host, "ip", "link", "add", "mst0", "type", "veth", "peer", "mst1")
    ns_exec(host, "ip", "link", "set", "mst0", "up")
    ns_exec(host, "ip", "link", "set", "mst1", "up")
    return host


def newer_than_go_1_1_1(impl, feature):
    """Debian's Go plugins are 1.1.1: features added upstream later cannot be checked there."""
    if impl == GO_BIN:
        pytest.skip(f"{feature} is newer than Debian's containernetworking-plugins 1.1.1")


def static(address):
    return {
        "type": "static",
        "addresses": [{"address": address, "gateway": f"{SUBNET}.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def run(plugin_dir, name, command, conf, pod, host, **kw):
    return run_plugin(
        plugin_dir, name, command, conf, netns=pod, in_netns=host, cni_path=plugin_dir, **kw
    )


def link(netns, name="eth0"):
    return next((e for e in ip_json(netns, "-d", "link", "show") if e["ifname"] == name), None)


def lifecycle(plugin_dir, name, conf, pod, host):
    """ADD, CHECK with the result, DEL twice; returns the ADD result and the link after ADD."""
    added = run(plugin_dir, name, "ADD", conf, pod, host)
    assert added.returncode == 0, added
    made = link(pod)
    checked = run(plugin_dir, name, "CHECK", dict(conf, prevResult=added.json), pod, host)
    assert checked.returncode == 0, checked
    for _ in range(2):
        deleted = run(plugin_dir, name, "DEL", dict(conf, prevResult=added.json), pod, host)
        assert deleted.returncode == 0, deleted
    assert link(pod) is None
    return added.json, made


# -- vlan ------------------------------------------------------------------------------------


def vlan_conf(**extra):
    conf = {
        "cniVersion": "1.0.0",
        "name": "vlnet",
        "type": "vlan",
        "master": "mst0",
        "vlanId": 100,
        "ipam": static(f"{SUBNET}.5/24"),
    }
    conf.update(extra)
    return conf


def test_vlan_lifecycle(impl, host, make_netns):
    pod = make_netns("vmp")
    result, made = lifecycle(impl, "vlan", vlan_conf(mtu=1400), pod, host)
    assert made["linkinfo"]["info_kind"] == "vlan"
    assert made["linkinfo"]["info_data"]["id"] == 100 and made["mtu"] == 1400
    assert result["ips"][0]["address"] == f"{SUBNET}.5/24"
    assert result["interfaces"][0] == {"name": "eth0", "mac": made["address"], "sandbox": pod}


def test_vlan_id_already_used_on_the_master_is_a_clear_error(impl, host, make_netns):
    first, second = make_netns("vmp"), make_netns("vmp")
    assert run(impl, "vlan", "ADD", vlan_conf(), first, host).returncode == 0
    done = run(impl, "vlan", "ADD", vlan_conf(), second, host)
    assert done.returncode != 0 and link(second) is None
    if impl == FROZEN_BIN:
        assert "cannot share" in done.json["details"], done.json


def test_vlan_link_in_container(impl, host, make_netns):
    newer_than_go_1_1_1(impl, "vlan linkInContainer")
    pod = make_netns("vmp")
    ns_exec(pod, "ip", "link", "add", "inner0", "type", "veth", "peer", "inner1")
    ns_exec(pod, "ip", "link", "set", "inner0", "up")
    conf = vlan_conf(master="inner0", linkInContainer=True, vlanId=7)
    _, made = lifecycle(impl, "vlan", conf, pod, host)
    assert made["linkinfo"]["info_data"]["id"] == 7 and made["link"] == "inner0"


# -- ipvlan ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
def test_ipvlan_lifecycle(impl, host, make_netns, mode):
    pod = make_netns("vmp")
    conf = {
        "cniVersion": "1.0.0",
        "name": "ipvnet",
        "type": "ipvlan",
        "master": "mst0",
        "mode": mode,
        "ipam": static(f"{SUBNET}.6/24"),
    }
    _, made = lifecycle(impl, "ipvlan", conf, pod, host)
    assert made["linkinfo"]["info_kind"] == "ipvlan"
    assert made["linkinfo"]["info_data"]["mode"] == mode


def test_ipvlan_pods_reach_each_other(impl, host, make_netns):
    pods = [make_netns("vmp"), make_netns("vmp")]
    for number, pod in enumerate(pods, start=10):
        conf = {
            "cniVersion": "1.0.0",
            "name": "ipvnet",
            "type": "ipvlan",
            "master": "mst0",
            "ipam": static(f"{SUBNET}.{number}/24"),
        }
        assert (
            run(impl, "ipvlan", "ADD", conf, pod, host, container_id=f"c{number}").returncode == 0
        )
    out = ns_exec(pods[0], "busybox", "ping", "-c", "1", "-W", "2", f"{SUBNET}.11", check=False)
    assert " 0% packet loss" in out


def test_ipvlan_chained_takes_master_and_addresses_from_prev_result(impl, host, make_netns):
    pod = make_netns("vmp")
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "mst0"}],
        "ips": [{"address": f"{SUBNET}.7/24", "interface": 0}],
    }
    conf = {"cniVersion": "1.0.0", "name": "ipvnet", "type": "ipvlan", "prevResult": prev}
    done = run(impl, "ipvlan", "ADD", conf, pod, host)
    assert done.returncode == 0, done
    assert link(pod)["linkinfo"]["info_kind"] == "ipvlan"
    addresses = [
        a["local"]
        for e in ip_json(pod, "-4", "addr", "show", "dev", "eth0")
        for a in e["addr_info"]
    ]
    assert addresses == [f"{SUBNET}.7"]


# -- dummy -----------------------------------------------------------------------------------


def test_dummy_lifecycle(impl, host, make_netns):
    newer_than_go_1_1_1(impl, "the dummy plugin")
    pod = make_netns("vmp")
    conf = {
        "cniVersion": "1.0.0",
        "name": "dnet",
        "type": "dummy",
        "ipam": static(f"{SUBNET}.8/24"),
    }
    result, made = lifecycle(impl, "dummy", conf, pod, host)
    assert made["linkinfo"]["info_kind"] == "dummy" and "UP" in made["flags"]
    assert result["ips"][0]["address"] == f"{SUBNET}.8/24"


# -- bridge VLAN filtering (this machine's kernel has no CONFIG_BRIDGE_VLAN_FILTERING) ----------


def bridge_conf(**extra):
    conf = {
        "cniVersion": "1.0.0",
        "name": "brvnet",
        "type": "bridge",
        "bridge": "brv0",
        "ipam": static(f"{SUBNET}.9/24"),
    }
    conf.update(extra)
    return conf


def port_vlans(host):
    """{port: [(vid, flags)]} from `bridge -j vlan show` in the host netns."""
    out = ns_exec(host, "bridge", "-j", "vlan", "show")
    found = {}
    for entry in json.loads(out or "[]"):
        found[entry["ifname"]] = sorted(
            (v["vlan"], tuple(v.get("flags", []))) for v in entry["vlans"]
        )
    return found


def host_port(host):
    return next(
        e["ifname"]
        for e in ip_json(host, "link", "show", "type", "veth")
        if e["ifname"].startswith("veth")
    )


def test_bridge_access_vlan(impl, host, make_netns):
    pod = make_netns("vmp")
    done = run(impl, "bridge", "ADD", bridge_conf(vlan=20), pod, host)
    assert done.returncode == 0, done
    assert link(host, "brv0")["linkinfo"]["info_data"]["vlan_filtering"] == 1
    vlans = port_vlans(host)[host_port(host)]
    assert (20, ("PVID", "Egress Untagged")) in vlans
    if impl == FROZEN_BIN:  # 1.1.1 keeps the default VLAN 1 (preserveDefaultVlan came later)
        assert vlans == [(20, ("PVID", "Egress Untagged"))]


def test_bridge_trunk_and_preserved_default_vlan(impl, host, make_netns):
    newer_than_go_1_1_1(impl, "vlanTrunk")
    pod = make_netns("vmp")
    trunk = [{"id": 30}, {"minID": 40, "maxID": 42}]
    done = run(
        impl, "bridge", "ADD", bridge_conf(vlanTrunk=trunk, preserveDefaultVlan=True), pod, host
    )
    assert done.returncode == 0, done
    vids = [vid for vid, _ in port_vlans(host)[host_port(host)]]
    assert vids == [1, 30, 40, 41, 42]


def test_bridge_vlan_gateway_interface(impl, host, make_netns):
    pod = make_netns("vmp")
    done = run(impl, "bridge", "ADD", bridge_conf(vlan=20, isGateway=True), pod, host)
    assert done.returncode == 0, done
    names = [i["name"] for i in done.json["interfaces"]]
    assert names[0] == "brv0" and names[-1] == "brv0.20"
    addresses = [
        a["local"]
        for e in ip_json(host, "-4", "addr", "show", "dev", "brv0.20")
        for a in e["addr_info"]
    ]
    assert addresses == [f"{SUBNET}.1"]
