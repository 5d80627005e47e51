"""macvlan, run the way a runtime runs it, inside a test "host" netns whose master is a veth.

Topology per test: netns `host` (where the plugin runs) holds `mst0`, a veth whose peer `gw0`
sits in netns `gateway` with 10.77.0.1/24; `host` has a default route via mst0. Pods are
further netns the macvlan links are created in.
"""

import functools
import json

import pytest
from conftest import ip_json, ns_exec
from kit.pods import (
    GatewayNode,
    add_fails_after_ipam,
    add_refused_by_ipam,
    add_then_del,
    addresses,
    del_releases_ipam_without_netns,
    del_twice_succeeds,
    link,
    pings,
    run_in_host,
)

SUBNET = "10.77.0"
STATIC = {
    "type": "static",
    "addresses": [{"address": f"{SUBNET}.5/24", "gateway": f"{SUBNET}.1"}],
    "routes": [{"dst": "0.0.0.0/0"}],
}


@pytest.fixture
def node(make_netns):
    return GatewayNode(make_netns, "mv", "mst0", "gw0", SUBNET, routed=True)


def conf(**extra):
    base = {"cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan", "master": "mst0"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def static(address, gateway=f"{SUBNET}.1", routes=None):
    entry = {"address": address}
    if gateway:
        entry["gateway"] = gateway
    return {"type": "static", "addresses": [entry], "routes": routes or []}


def run(plugin_dir, node, command, config, **kw):
    return run_in_host(plugin_dir, "macvlan", node.host, command, config, **kw)


# -- ADD -----------------------------------------------------------------------------------


def test_add_creates_macvlan_with_ipam_result(plugin_dir, node):
    pod = node.pod()
    config = conf(ipam=STATIC, dns={"nameservers": ["10.77.0.53"], "search": ["example"]})
    done = run(plugin_dir, node, "ADD", config, pod=pod)
    assert done.returncode == 0, done
    mac = link(pod)["address"]
    assert done.json == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": mac, "sandbox": pod}],
        "ips": [{"interface": 0, "address": f"{SUBNET}.5/24", "gateway": f"{SUBNET}.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.77.0.53"], "search": ["example"]},
    }
    created = link(pod)
    assert created["linkinfo"]["info_kind"] == "macvlan"
    assert created["linkinfo"]["info_data"]["mode"] == "bridge"
    assert "UP" in created["flags"]
    assert addresses(pod) == [f"{SUBNET}.5/24"]
    routes = ip_json(pod, "route", "show", "default")
    assert routes[0]["gateway"] == f"{SUBNET}.1" and routes[0]["dev"] == "eth0"


def test_add_sets_arp_and_ndisc_notify(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(ipam=STATIC), pod=pod).returncode == 0
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").strip() == "1"
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv6/conf/eth0/ndisc_notify").strip() == "1"


def test_pods_reach_each_other_and_the_gateway(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    for number, pod in enumerate(pods, start=10):
        config = conf(ipam=static(f"{SUBNET}.{number}/24", routes=[{"dst": "0.0.0.0/0"}]))
        done = run(plugin_dir, node, "ADD", config, pod=pod, container_id=f"c{number}")
        assert done.returncode == 0, done
    assert pings(pods[0], f"{SUBNET}.11")
    assert pings(pods[1], f"{SUBNET}.10")
    assert pings(pods[0], f"{SUBNET}.1")


def test_dual_stack_pod_reaches_the_gateway_over_ipv6(plugin_dir, node):
    ns_exec(node.gateway, "ip", "addr", "add", "fd00:77::1/64", "dev", "gw0", "nodad")
    pod = node.pod()
    dual = {
        "type": "static",
        "addresses": [
            {"address": f"{SUBNET}.6/24", "gateway": f"{SUBNET}.1"},
            {"address": "fd00:77::6/64", "gateway": "fd00:77::1"},
        ],
        "routes": [{"dst": "::/0"}],
    }
    done = run(plugin_dir, node, "ADD", conf(ipam=dual), pod=pod)
    assert done.returncode == 0, done
    assert [ip["address"] for ip in done.json["ips"]] == [f"{SUBNET}.6/24", "fd00:77::6/64"]
    route = ip_json(pod, "-6", "route", "show", "default")[0]
    assert (route["gateway"], route["dev"]) == ("fd00:77::1", "eth0")
    out = ns_exec(pod, "busybox", "ping6", "-c", "1", "-W", "2", "fd00:77::1", check=False)
    assert " 0% packet loss" in out


def test_master_defaults_to_default_route_interface(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(master=None), pod=pod)
    assert done.returncode == 0, done
    master_index = link(node.host, "mst0")["ifindex"]
    assert link(pod)["link_index"] == master_index


def test_no_master_and_no_default_route_is_a_clear_error(plugin_dir, node):
    ns_exec(node.host, "ip", "route", "del", "default")
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(master=None), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "no default route interface found"
    assert "master" in done.json["details"]


def test_missing_master_fails_and_leaves_nothing(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(master="nosuch0"), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == 'failed to lookup master "nosuch0": link not found'
    assert [entry["ifname"] for entry in ip_json(pod, "link", "show")] == ["lo"]


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru", "source"])
def test_mode_is_applied(plugin_dir, node, mode):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(mode=mode), pod=pod)
    assert done.returncode == 0, done
    assert link(pod)["linkinfo"]["info_data"]["mode"] == mode


def test_unknown_mode_is_rejected(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(mode="bogus"), pod=node.pod())
    assert done.returncode == 1
    assert done.json["code"] == 7
    assert done.json["msg"] == 'unknown macvlan mode: "bogus"'


def test_mtu_is_applied(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(mtu=1400), pod=pod).returncode == 0
    assert link(pod)["mtu"] == 1400


def test_mtu_above_master_is_rejected(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(mtu=9000), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "invalid MTU 9000, must be [0, master MTU(1500)]"
    assert link(pod) is None


def test_mac_from_config(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(mac="0A:58:0A:4D:00:05"), pod=pod)
    assert done.returncode == 0, done
    assert link(pod)["address"] == "0a:58:0a:4d:00:05"
    assert done.json["interfaces"][0]["mac"] == "0a:58:0a:4d:00:05"


def test_mac_precedence_config_then_cni_args_then_runtime_config(plugin_dir, node):
    pod = node.pod()
    config = conf(mac="0a:58:00:00:00:01")
    args = "IgnoreUnknown=1;MAC=0a:58:00:00:00:02"
    assert run(plugin_dir, node, "ADD", config, pod=pod, args=args).returncode == 0
    assert link(pod)["address"] == "0a:58:00:00:00:02"
    pod = node.pod()
    config = conf(mac="0a:58:00:00:00:01", runtimeConfig={"mac": "0a:58:00:00:00:03"})
    assert run(plugin_dir, node, "ADD", config, pod=pod, args=args).returncode == 0
    assert link(pod)["address"] == "0a:58:00:00:00:03"


def test_invalid_mac_is_rejected(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(mac="not-a-mac"), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == 'invalid MAC address "not-a-mac" in config "mac"'
    assert link(pod) is None


def test_unknown_cni_args_are_rejected(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(), pod=node.pod(), args="K8S_POD_NAME=x")
    assert done.returncode == 1
    assert done.json["msg"] == 'ARGS: unknown args ["K8S_POD_NAME=x"]'


def test_bcqueuelen_is_applied(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(bcqueuelen=4321), pod=pod)
    assert done.returncode == 0, done
    assert link(pod)["linkinfo"]["info_data"]["bcqueuelen"] == 4321


def test_negative_bcqueuelen_is_rejected(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(bcqueuelen=-1), pod=node.pod())
    assert done.returncode == 1
    assert done.json["code"] == 7


def test_link_in_container_uses_master_inside_the_pod(plugin_dir, node):
    pod = node.pod()
    ns_exec(pod, "ip", "link", "add", "inner0", "type", "veth", "peer", "inner1")
    ns_exec(pod, "ip", "link", "set", "inner0", "up")
    done = run(plugin_dir, node, "ADD", conf(master="inner0", linkInContainer=True), pod=pod)
    assert done.returncode == 0, done
    assert link(pod)["link"] == "inner0"


def test_l2_only_without_ipam_brings_link_up_and_reports_no_ips(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(), pod=pod)
    assert done.returncode == 0, done
    assert "ips" not in done.json
    assert "UP" in link(pod)["flags"]


def test_ifname_may_equal_a_host_interface_name(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(), pod=pod, ifname="mst0")
    assert done.returncode == 0, done
    assert link(pod, "mst0")["linkinfo"]["info_kind"] == "macvlan"


def test_existing_ifname_in_pod_fails_without_leftovers(plugin_dir, node, fake_ipam):
    pod = node.pod()
    ns_exec(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "other0")
    config = conf(ipam={"type": fake_ipam.name})
    done = run(plugin_dir, node, "ADD", config, pod=pod, **fake_ipam.answering())
    assert done.returncode == 1
    assert done.json["msg"] == 'failed to rename macvlan to "eth0": file exists'
    names = sorted(entry["ifname"] for entry in ip_json(pod, "link", "show"))
    assert names == ["eth0", "lo", "other0"]
    assert fake_ipam.calls() == []


def test_ipam_failure_removes_the_link(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    done = add_refused_by_ipam(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    assert done.json == {"code": 11, "msg": "fake-ipam: ADD refused"}
    assert link(pod) is None


def test_configure_failure_releases_ipam_and_removes_the_link(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    done = add_fails_after_ipam(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    assert "failed to add route '10.200.0.0/16 via 192.0.2.1" in done.json["msg"]
    assert link(pod) is None


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_add_result_in_family_b(plugin_dir, node, version):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(cniVersion=version, ipam=STATIC), pod=pod)
    assert done.returncode == 0, done
    assert done.json["ips"] == [
        {"version": "4", "interface": 0, "address": f"{SUBNET}.5/24", "gateway": f"{SUBNET}.1"}
    ]
    assert done.json["dns"] == {}


def test_add_result_in_family_a(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(cniVersion="0.2.0", ipam=STATIC), pod=pod)
    assert done.returncode == 0, done
    assert done.json == {
        "cniVersion": "0.2.0",
        "ip4": {
            "ip": f"{SUBNET}.5/24",
            "gateway": f"{SUBNET}.1",
            "routes": [{"dst": "0.0.0.0/0"}],
        },
        "dns": {},
    }


# -- DEL -----------------------------------------------------------------------------------


def test_del_removes_link_and_releases_ipam(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    done = add_then_del(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    assert done.stdout == ""
    assert link(pod) is None


def test_del_twice_succeeds(plugin_dir, node):
    del_twice_succeeds(functools.partial(run, plugin_dir, node), node.pod(), conf())


def test_del_with_missing_netns_still_releases_ipam(plugin_dir, node, fake_ipam, tmp_path):
    config = conf(ipam={"type": fake_ipam.name})
    gone = str(tmp_path / "gone")
    del_releases_ipam_without_netns(
        functools.partial(run, plugin_dir, node), config, fake_ipam, gone
    )


def test_del_with_empty_netns_releases_ipam(plugin_dir, node, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    del_releases_ipam_without_netns(functools.partial(run, plugin_dir, node), config, fake_ipam)


def test_del_does_not_need_the_master(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(), pod=pod).returncode == 0
    ns_exec(node.host, "ip", "link", "del", "mst0")
    done = run(plugin_dir, node, "DEL", conf(), pod=pod)
    assert done.returncode == 0, done


def test_del_removes_link_even_when_ipam_del_fails(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    kw = dict(pod=pod, extra_path=fake_ipam.dir)
    assert run(plugin_dir, node, "ADD", config, env=fake_ipam.env(), **kw).returncode == 0
    done = run(plugin_dir, node, "DEL", config, env=fake_ipam.env(fail="DEL"), **kw)
    assert done.returncode == 1
    assert done.json["msg"] == "fake-ipam: DEL refused"
    assert link(pod) is None


# -- CHECK, STATUS, GC ---------------------------------------------------------------------


def added(plugin_dir, node, config):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", config, pod=pod)
    assert done.returncode == 0, done
    return pod, dict(config, prevResult=done.json)


def test_check_passes_after_add(plugin_dir, node):
    pod, checked = added(plugin_dir, node, conf(ipam=STATIC))
    done = run(plugin_dir, node, "CHECK", checked, pod=pod)
    assert done.returncode == 0, done


def test_check_requires_prev_result(plugin_dir, node):
    pod, _ = added(plugin_dir, node, conf())
    done = run(plugin_dir, node, "CHECK", conf(), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "required prevResult missing"


def test_check_fails_on_other_mode(plugin_dir, node):
    pod, checked = added(plugin_dir, node, conf(mode="private"))
    checked["mode"] = "vepa"
    done = run(plugin_dir, node, "CHECK", checked, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "container macvlan mode private does not match expected value: vepa"


def test_check_fails_when_address_is_gone(plugin_dir, node):
    pod, checked = added(plugin_dir, node, conf(ipam=STATIC))
    ns_exec(pod, "ip", "addr", "flush", "dev", "eth0")
    done = run(plugin_dir, node, "CHECK", checked, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == f"Failed to match addr {SUBNET}.5/24 on interface eth0"


def test_check_fails_when_route_is_gone(plugin_dir, node):
    pod, checked = added(plugin_dir, node, conf(ipam=STATIC))
    ns_exec(pod, "ip", "route", "del", "default")
    done = run(plugin_dir, node, "CHECK", checked, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "Expected Route 0.0.0.0/0 not found in routing table"


def test_check_fails_when_link_is_gone(plugin_dir, node):
    pod, checked = added(plugin_dir, node, conf())
    ns_exec(pod, "ip", "link", "del", "eth0")
    done = run(plugin_dir, node, "CHECK", checked, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "Container Interface name in prevResult: eth0 not found"


def test_status_forwards_to_ipam(plugin_dir, node, fake_ipam):
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    done = run(plugin_dir, node, "STATUS", config, **fake_ipam.answering())
    assert done.returncode == 0, done
    assert fake_ipam.calls() == ["STATUS"]


def test_status_reports_missing_master_as_unavailable(plugin_dir, node):
    done = run(plugin_dir, node, "STATUS", conf(cniVersion="1.1.0", master="nosuch0"))
    assert done.returncode == 1
    assert done.json["code"] == 50


def test_gc_forwards_to_ipam(plugin_dir, node, fake_ipam):
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    config["cni.dev/valid-attachments"] = []
    done = run(plugin_dir, node, "GC", config, **fake_ipam.answering())
    assert done.returncode == 0, done
    assert fake_ipam.calls() == ["GC"]


# -- differential: Debian's Go macvlan 1.1.1 -----------------------------------------------

DIFF_CASES = {
    "static-default-master": dict(master=None, ipam=STATIC, dns={"nameservers": ["10.0.0.53"]}),
    "private-mtu-mac": dict(mode="private", mtu=1400, mac="0a:58:0a:4d:00:09", ipam=STATIC),
    "l2-only": dict(mode="vepa"),
    "v0.4.0": dict(cniVersion="0.4.0", ipam=STATIC),
}


def kernel_view(pod):
    """What a user sees of the pod's interface, minus what is random (MAC, indexes)."""
    entry = link(pod)
    info = entry["linkinfo"]
    view = {
        "kind": info["info_kind"],
        "mode": info["info_data"]["mode"],
        "mtu": entry["mtu"],
        "flags": sorted(entry["flags"]),
        "addresses": addresses(pod),
        "routes": ip_json(pod, "route", "show"),
        "arp_notify": ns_exec(pod, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").strip(),
    }
    return view, entry["address"]


def normalised(result, mac, pod):
    """Random parts replaced; an empty 1.0.0 `dns` dropped (Go 1.1.1 prints it, upstream since
    v1.2 and we do not)."""
    text = json.dumps(result).replace(mac, "<mac>").replace(pod, "<netns>")
    found = json.loads(text)
    if found.get("dns") == {} and found["cniVersion"].startswith("1."):
        del found["dns"]
    return found


@pytest.mark.oracle
@pytest.mark.parametrize("case", sorted(DIFF_CASES))
def test_same_result_and_kernel_state_as_go(source_bin, go_bin, node, case):
    views = {}
    for name, directory in (("go", go_bin), ("ours", source_bin)):
        pod = node.pod()
        config = conf(**DIFF_CASES[case])
        done = run(directory, node, "ADD", config, pod=pod, container_id=f"diff-{name}")
        assert done.returncode == 0, (name, done)
        view, mac = kernel_view(pod)
        checked = dict(config, prevResult=done.json)
        check = run(directory, node, "CHECK", checked, pod=pod)
        deleted = run(directory, node, "DEL", checked, pod=pod)
        views[name] = (
            normalised(done.json, mac, pod),
            view,
            check.returncode,
            deleted.returncode,
            link(pod),
        )
    assert views["ours"] == views["go"]


@pytest.mark.oracle
@pytest.mark.parametrize(
    "bad",
    [dict(mode="bogus"), dict(mtu=9000), dict(master="nosuch0"), dict(mac="zz")],
    ids=["mode", "mtu", "master", "mac"],
)
def test_rejects_what_go_rejects(source_bin, go_bin, node, bad):
    for directory in (go_bin, source_bin):
        pod = node.pod()
        done = run(directory, node, "ADD", conf(**bad), pod=pod)
        assert done.returncode == 1, (directory, done)
        assert link(pod) is None
