"""ptp, run the way a runtime runs it, inside a test "host" netns (see l3node.Node)."""

import os
import subprocess

import pytest
from conftest import ip_json, ns_exec
from kit.l3node import EXTERNAL, Node, addresses, link, pings, shape, with_prev

SUBNET = "10.55.0"


@pytest.fixture
def node(make_netns, tmp_path):
    return Node(make_netns, tmp_path, "ptp")


def conf(node, *subnets, **extra):
    base = {"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp"}
    base["ipam"] = node.host_local(*(subnets or [f"{SUBNET}.0/24"]), routes=[{"dst": "0.0.0.0/0"}])
    base.update(extra)
    return base


def routes(netns, family="-4"):
    return {(r["dst"], r.get("gateway"), r.get("scope")) for r in ip_json(netns, family, "route")}


def test_add_routes_everything_through_the_host_end(plugin_dir, node):
    pod = node.pod()
    result = node.add(plugin_dir, conf(node), pod)
    host_veth = node.host_veths()[0]
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": host_veth, "mac": link(node.host, host_veth)["address"]},
            {"name": "eth0", "mac": link(pod)["address"], "sandbox": pod},
        ],
        "ips": [{"interface": 1, "address": f"{SUBNET}.2/24", "gateway": f"{SUBNET}.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert addresses(node.host, host_veth) == [f"{SUBNET}.1/32"]
    assert routes(pod) == {
        ("default", f"{SUBNET}.1", None),
        (f"{SUBNET}.0/24", f"{SUBNET}.1", None),
        (f"{SUBNET}.1", None, "link"),
    }
    host_routes = ip_json(node.host, "route", "show", f"{SUBNET}.2")
    assert host_routes[0]["dev"] == host_veth and host_routes[0]["scope"] == "host"
    assert ns_exec(node.host, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"


def test_pods_reach_the_host_and_each_other_through_it(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    for number, pod in enumerate(pods):
        node.add(plugin_dir, conf(node), pod, cid=f"c{number}")
    assert pings(pods[0], f"{SUBNET}.1")
    assert pings(pods[0], f"{SUBNET}.3")
    assert pings(pods[1], f"{SUBNET}.2")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_ipmasq_reaches_external_and_del_removes_everything(plugin_dir, node, backend):
    pod = node.pod()
    config = conf(node, ipMasq=True, ipMasqBackend=backend)
    result = node.add(plugin_dir, config, pod)
    assert pings(pod, EXTERNAL)
    for _ in range(2):
        done = node.run(plugin_dir, "DEL", with_prev(config, result), pod=pod)
        assert done.returncode == 0, done
    assert node.host_veths() == [] and link(pod) is None
    assert node.nat_rules() == "" and node.reservations("ptpnet") == []
    assert ip_json(node.host, "route", "show", f"{SUBNET}.2") == []


def test_without_ipmasq_external_is_unreachable(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node), pod)
    assert not pings(pod, EXTERNAL)


def test_dual_stack(plugin_dir, node):
    pod = node.pod()
    result = node.add(plugin_dir, conf(node, f"{SUBNET}.0/24", "fd55::/64"), pod)
    assert [ip["address"] for ip in result["ips"]] == [f"{SUBNET}.2/24", "fd55::2/64"]
    assert addresses(node.host, node.host_veths()[0], "-6") == ["fd55::1/128"]
    assert pings(pod, "fd55::1", attempts=5)


def test_mtu(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node, mtu=1300), pod)
    assert link(pod)["mtu"] == 1300 and link(node.host, node.host_veths()[0])["mtu"] == 1300


def test_ipam_is_required(plugin_dir, node):
    config = conf(node)
    del config["ipam"]
    done = node.run(plugin_dir, "ADD", config, pod=node.pod())
    assert done.returncode == 1 and done.json["code"] == 7
    assert "ptp needs an IPAM plugin" in done.json["msg"]


def test_failed_add_releases_the_address_and_removes_the_veth(plugin_dir, node):
    pod = node.pod()
    ns_exec(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "eth1")
    done = node.run(plugin_dir, "ADD", conf(node), pod=pod)
    assert done.returncode == 1
    assert 'container veth name ("eth0")' in done.json["msg"]
    assert node.reservations("ptpnet") == [] and node.host_veths() == []


def test_del_with_netns_gone_releases_and_removes_rules(plugin_dir, node):
    pod = node.pod()
    config = conf(node, ipMasq=True)
    result = node.add(plugin_dir, config, pod)
    subprocess.run(["ip", "netns", "del", os.path.basename(pod)], check=True)
    done = node.run(plugin_dir, "DEL", with_prev(config, result), pod=pod)
    assert done.returncode == 0, done
    assert node.nat_rules() == "" and node.reservations("ptpnet") == []


def test_check_passes_then_notices_a_missing_route(plugin_dir, node):
    pod = node.pod()
    config = conf(node)
    result = node.add(plugin_dir, config, pod)
    assert node.run(plugin_dir, "CHECK", with_prev(config, result), pod=pod).returncode == 0
    ns_exec(pod, "ip", "route", "del", "default")
    done = node.run(plugin_dir, "CHECK", with_prev(config, result), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "Expected Route 0.0.0.0/0 not found in routing table"
    done = node.run(plugin_dir, "CHECK", config, pod=pod)
    assert done.json["msg"] == "ptp: Required prevResult missing"


def test_gc_removes_stale_masquerade_and_reservations(plugin_dir, node):
    config = conf(node, ipMasq=True, cniVersion="1.1.0")
    for number in range(2):
        node.add(plugin_dir, config, node.pod(), cid=f"c{number}")
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    done = node.run(plugin_dir, "GC", dict(config, **{"cni.dev/valid-attachments": valid}))
    assert done.returncode == 0, done
    assert f"{SUBNET}.2/32" not in node.nat_rules() and f"{SUBNET}.3/32" in node.nat_rules()
    assert node.reservations("ptpnet") == [f"{SUBNET}.3"]


def test_same_result_shape_and_kernel_routes_as_go(plugin_dir, go_bin, node):
    config = conf(node)
    ours_pod, go_pod = node.pod(), node.pod()
    ours = node.add(plugin_dir, config, ours_pod, cid="ours")
    theirs = node.add(go_bin, config, go_pod, cid="theirs")
    theirs_shape = shape(theirs)
    theirs_shape["ips"][0]["address"] = shape(ours)["ips"][0]["address"]
    assert shape(ours) == {k: v for k, v in theirs_shape.items() if v != {}}
    mine = {(d.replace(".2", ".X").replace(".3", ".X"), g, s) for d, g, s in routes(ours_pod)}
    go = {(d.replace(".2", ".X").replace(".3", ".X"), g, s) for d, g, s in routes(go_pod)}
    assert mine == go


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_add_by_one_del_by_the_other_leaves_nothing(plugin_dir, go_bin, node, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    pod = node.pod()
    config = conf(node, ipMasq=True)
    result = node.add(dirs[adder], config, pod)
    done = node.run(dirs[deleter], "DEL", with_prev(config, result), pod=pod)
    assert done.returncode == 0, done
    assert node.host_veths() == [] and node.nat_rules() == ""
    assert node.reservations("ptpnet") == []


def test_status_forwards_to_ipam(plugin_dir, node):
    config = conf(node, f"{SUBNET}.0/30", cniVersion="1.1.0")
    assert node.run(plugin_dir, "STATUS", config).returncode == 0
    node.add(plugin_dir, config, node.pod())  # a /30 has one free address
    done = node.run(plugin_dir, "STATUS", config)
    assert done.returncode == 1 and done.json["code"] == 50
