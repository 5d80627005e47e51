"""vrf against a kernel that has VRFs: run INSIDE the VM (tests/kernel/test_kernel_vm.py boots
Debian's kernel and runs this file with pytest there), on our frozen vrf and on Go's 1.1.1.

The pod is wired the way a main plugin leaves it: `eth0` (a veth, its peer in a test "host"
netns) up with an IPv4 and an IPv6 address, default routes and one more IPAM route.
keep_addr_on_down stays 0, so enslaving drops the IPv6 address and the plugin must re-add it.
"""

import os

import pytest
from conftest import FROZEN_BIN, GO_BIN, ip_json, ns_exec, run_plugin

V4, GW4, V6, GW6 = "10.86.0.5/24", "10.86.0.1", "2001:db8:86::5/64", "2001:db8:86::1"
UNIVERSE_ROUTES = {("-4", "default"), ("-4", "10.87.0.0/16"), ("-6", "default")}


@pytest.fixture(params=["pycni", "go"])
def impl(request):
    return FROZEN_BIN if request.param == "pycni" else GO_BIN


def only_ours(impl, why):
    if impl == GO_BIN:
        pytest.skip(f"Go's vrf 1.1.1 {why}")


@pytest.fixture
def host(make_netns):
    return make_netns("vfh")


@pytest.fixture
def pod(make_netns, host):
    pod = make_netns("vfp")
    wire(pod, host)
    return pod


def wire(pod, host, ifname="eth0", v4=V4, v6=V6, routes=True):
    ns_exec(
        pod,
        "ip",
        "link",
        "add",
        ifname,
        "type",
        "veth",
        "peer",
        "p" + ifname,
        "netns",
        os.path.basename(host),
    )
    ns_exec(host, "ip", "link", "set", "p" + ifname, "up")
    ns_exec(pod, "ip", "link", "set", ifname, "up")
    ns_exec(pod, "ip", "addr", "add", v4, "dev", ifname)
    ns_exec(pod, "ip", "addr", "add", v6, "dev", ifname, "nodad")
    if routes:
        ns_exec(pod, "ip", "route", "add", "default", "via", GW4, "dev", ifname)
        ns_exec(pod, "ip", "route", "add", "10.87.0.0/16", "via", GW4, "dev", ifname)
        ns_exec(pod, "ip", "-6", "route", "add", "default", "via", GW6, "dev", ifname)


def conf(pod, ifname="eth0", v4=V4, **extra):
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": ifname, "sandbox": pod}],
        "ips": [{"address": v4, "gateway": GW4, "interface": 0}],
    }
    base = {
        "cniVersion": "1.0.0",
        "name": "vrfnet",
        "type": "vrf",
        "vrfname": "red",
        "prevResult": prev,
    }
    base.update(extra)
    return base


def vrf(plugin_dir, command, config, pod, **kw):
    return run_plugin(plugin_dir, "vrf", command, config, netns=pod, **kw)


def link(pod, name="eth0"):
    return next((e for e in ip_json(pod, "-d", "link", "show") if e["ifname"] == name), None)


def vrf_table(pod, name="red"):
    found = link(pod, name)
    return found["linkinfo"]["info_data"]["table"] if found else None


def global_v6(pod, ifname="eth0"):
    return [
        f"{a['local']}/{a['prefixlen']}"
        for e in ip_json(pod, "-6", "addr", "show", "dev", ifname, "scope", "global")
        for a in e["addr_info"]
        if "local" in a
    ]


def routes(pod, table):
    """{(family, dst)} of the unicast routes in `table`."""
    found = set()
    for family in ("-4", "-6"):
        for route in ip_json(pod, family, "route", "show", "table", str(table)):
            if route.get("type", "unicast") == "unicast":
                found.add((family, route["dst"]))
    return found


def test_vrf_lifecycle_enslaves_readds_ipv6_and_removes_the_vrf(impl, pod):
    config = conf(pod)
    done = vrf(impl, "ADD", config, pod)
    assert done.returncode == 0, done
    assert {k: v for k, v in done.json.items() if k != "dns"} == config["prevResult"]
    red = link(pod, "red")
    assert red["linkinfo"]["info_kind"] == "vrf" and "UP" in red["flags"]
    assert vrf_table(pod) == 1
    assert link(pod)["master"] == "red"
    assert global_v6(pod) == [V6]
    in_vrf = routes(pod, 1)
    assert {("-4", "10.86.0.0/24"), ("-6", "2001:db8:86::/64")} <= in_vrf
    if impl == FROZEN_BIN:  # moving the routes came after 1.1.1
        assert UNIVERSE_ROUTES <= in_vrf
    else:
        assert not UNIVERSE_ROUTES & in_vrf
    assert vrf(impl, "CHECK", config, pod).returncode == 0
    for _ in range(2):
        done = vrf(impl, "DEL", config, pod)
        assert done.returncode == 0, done
    assert link(pod, "red") is None and "master" not in link(pod)


def test_vrf_table_given_shared_by_two_interfaces_and_last_slave_removes_it(impl, pod, host):
    wire(pod, host, "net1", v4="10.88.0.5/24", v6="2001:db8:88::5/64", routes=False)
    first = conf(pod, table=42)
    assert vrf(impl, "ADD", first, pod).returncode == 0
    assert vrf_table(pod) == 42
    clash = conf(pod, "net1", "10.88.0.5/24", table=43)
    done = vrf(impl, "ADD", clash, pod, ifname="net1")
    assert done.returncode == 1
    assert "VRF red already exist with different routing table 42" in done.json["msg"]
    assert "master" not in link(pod, "net1")
    second = conf(pod, "net1", "10.88.0.5/24")  # table 0: whatever the VRF has
    assert vrf(impl, "ADD", second, pod, ifname="net1").returncode == 0
    assert link(pod, "net1")["master"] == "red"
    assert vrf(impl, "DEL", first, pod).returncode == 0
    assert vrf_table(pod) == 42 and "master" not in link(pod)
    assert vrf(impl, "DEL", second, pod, ifname="net1").returncode == 0
    assert link(pod, "red") is None


def test_vrf_first_free_table_skips_other_vrfs(impl, pod):
    ns_exec(pod, "ip", "link", "add", "blue", "type", "vrf", "table", "1")
    assert vrf(impl, "ADD", conf(pod), pod).returncode == 0
    assert vrf_table(pod) == 2


def test_vrf_interface_with_a_master_is_refused(impl, pod):
    ns_exec(pod, "ip", "link", "add", "blue", "type", "vrf", "table", "7")
    ns_exec(pod, "ip", "link", "set", "eth0", "master", "blue")
    done = vrf(impl, "ADD", conf(pod), pod)
    assert done.returncode == 1
    assert "interface eth0 has already a master set: blue" in done.json["msg"]
    assert link(pod)["master"] == "blue"


def test_vrf_check_fails_when_the_interface_left(impl, pod):
    only_ours(impl, "CHECK passes whatever the state")
    config = conf(pod)
    assert vrf(impl, "ADD", config, pod).returncode == 0
    ns_exec(pod, "ip", "link", "set", "eth0", "nomaster")
    done = vrf(impl, "CHECK", config, pod)
    assert done.returncode == 1 and "failed to find eth0 associated to vrf red" in done.json["msg"]


def test_vrf_failed_add_leaves_no_vrf(impl, pod):
    only_ours(impl, "leaves the VRF it created when enslaving fails")
    done = vrf(impl, "ADD", conf(pod, "nope0"), pod, ifname="nope0")
    assert done.returncode == 1 and "could not get link by name nope0" in done.json["msg"]
    assert link(pod, "red") is None


def test_vrf_del_when_the_interface_is_gone(impl, pod):
    only_ours(impl, "fails DEL when the interface is gone")
    config = conf(pod)
    assert vrf(impl, "ADD", config, pod).returncode == 0
    ns_exec(pod, "ip", "link", "del", "eth0")
    assert vrf(impl, "DEL", config, pod).returncode == 0
    assert link(pod, "red") is None


@pytest.mark.parametrize("adder", ["pycni", "go"])
def test_vrf_add_by_one_del_by_the_other(adder, pod):
    dirs = {"pycni": FROZEN_BIN, "go": GO_BIN}
    other = dirs["go" if adder == "pycni" else "pycni"]
    config = conf(pod)
    assert vrf(dirs[adder], "ADD", config, pod).returncode == 0
    assert vrf(other, "CHECK", config, pod).returncode == 0
    assert vrf(other, "DEL", config, pod).returncode == 0
    assert link(pod, "red") is None and "master" not in link(pod)


def test_vrf_same_links_addresses_and_connected_routes_as_go(make_netns):
    states = {}
    for name, directory in (("go", GO_BIN), ("pycni", FROZEN_BIN)):
        host, pod = make_netns("vfh"), make_netns("vfp")
        wire(pod, host)
        assert vrf(directory, "ADD", conf(pod), pod).returncode == 0
        states[name] = (
            link(pod)["master"],
            vrf_table(pod),
            global_v6(pod),
            routes(pod, 1) - UNIVERSE_ROUTES,
        )
    assert states["pycni"] == states["go"]
