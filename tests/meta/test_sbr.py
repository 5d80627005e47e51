"""sbr chained after a main plugin: behaviour tests on a pod the test wires itself (a veth
`eth0` with addresses and routes, its peer in a test "host" netns), differential tests against
Debian's Go sbr 1.1.1, and the chain after our own bridge and ptp with host-local."""

import concurrent.futures
import re

import pytest
from conftest import ip_json, ns_exec, run_plugin
from kit.l3node import Node, with_prev
from kit.pods import wire_pod

V4, GW4 = "10.9.0.5/24", "10.9.0.1"
V6, GW6 = "2001:db8::5/64", "2001:db8::1"
DEFAULT_RULES = {
    "-4": [
        "0:\tfrom all lookup local",
        "32766:\tfrom all lookup main",
        "32767:\tfrom all lookup default",
    ],
    "-6": ["0:\tfrom all lookup local", "32766:\tfrom all lookup main"],
}


def wire(pod, host, ifname="eth0", v4=V4, v6=V6, gw4=GW4, gw6=GW6, extra_route=True, metric=0):
    """What a main plugin leaves: the interface up with its addresses and routes."""
    peer = "p" + ifname
    wire_pod(pod, host, peer, ifname)
    ns_exec(host, "ip", "link", "set", peer, "up")
    ns_exec(pod, "ip", "addr", "add", v4, "dev", ifname)
    ns_exec(pod, "ip", "addr", "add", v6, "dev", ifname, "nodad")
    if gw4:
        ns_exec(
            pod, "ip", "route", "add", "default", "via", gw4, "dev", ifname, "metric", str(metric)
        )
        if extra_route:
            ns_exec(pod, "ip", "route", "add", "10.10.0.0/16", "via", gw4, "dev", ifname)
    if gw6:
        ns_exec(pod, "ip", "-6", "route", "add", "default", "via", gw6, "dev", ifname)


@pytest.fixture
def host(make_netns):
    return make_netns("sbh")


@pytest.fixture
def pod(make_netns, host):
    pod = make_netns("sbp")
    wire(pod, host)
    return pod


def prev(pod, ifname="eth0", v4=V4, v6=V6, gw4=GW4, gw6=GW6):
    ips = [{"address": v4, "gateway": gw4, "interface": 0}]
    if v6:
        ips.append({"address": v6, "gateway": gw6, "interface": 0})
    return {"cniVersion": "1.0.0", "interfaces": [{"name": ifname, "sandbox": pod}], "ips": ips}


def conf(pod, ifname="eth0", **extra):
    base = {"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr", "prevResult": prev(pod, ifname)}
    base.update(extra)
    return base


def sbr(plugin_dir, command, config, pod, **kw):
    return run_plugin(plugin_dir, "sbr", command, config, netns=pod, **kw)


def rules(pod, family="-4"):
    return ns_exec(pod, "ip", family, "rule").strip().splitlines()


def kernel_state(pod):
    """Everything sbr touches, as `ip` prints it (details on). The kernel's own routes of an
    IPv6 link-local address are left out: the address comes up whenever autoconfiguration
    gets to it (under load, in the middle of a test), and sbr never touches it."""
    text = "\n".join(
        ns_exec(pod, "ip", *argv)
        for argv in (
            ["-d", "-4", "rule"],
            ["-d", "-6", "rule"],
            ["-d", "route", "show", "table", "all"],
        )
    )
    return "\n".join(line for line in text.splitlines() if not line.startswith("local fe80::"))


def table(pod, number, family="-4"):
    return ip_json(pod, family, "route", "show", "table", str(number))


def dsts(routes):
    return sorted(r["dst"] for r in routes)


# -- ADD -------------------------------------------------------------------------------------


def test_each_ip_gets_a_rule_and_its_own_table_and_main_loses_the_routes(plugin_dir, pod):
    config = conf(pod)
    done = sbr(plugin_dir, "ADD", config, pod)
    assert done.returncode == 0, done
    assert done.json == config["prevResult"]
    assert rules(pod) == [
        DEFAULT_RULES["-4"][0],
        "32765:\tfrom 10.9.0.5 lookup 100",
        *DEFAULT_RULES["-4"][1:],
    ]
    assert rules(pod, "-6")[1] == "32765:\tfrom 2001:db8::5 lookup 101"
    assert dsts(table(pod, 100)) == ["10.10.0.0/16", "10.9.0.0/24", "default"]
    assert dsts(table(pod, 100, "-6")) == ["2001:db8::/64", "fe80::/64"]  # generic routes
    assert dsts(table(pod, 101, "-6")) == ["2001:db8::/64", "default", "fe80::/64"]
    assert ip_json(pod, "-4", "route", "show", "dev", "eth0") == []
    assert ip_json(pod, "-6", "route", "show", "dev", "eth0") == []
    assert sbr(plugin_dir, "CHECK", config, pod).returncode == 0


def test_first_free_table_skips_tables_in_use_and_pods_with_two_networks(plugin_dir, pod, host):
    ns_exec(pod, "ip", "rule", "add", "from", "10.77.0.1", "lookup", "100")
    ns_exec(pod, "ip", "route", "add", "blackhole", "10.78.0.0/16", "table", "101")
    assert sbr(plugin_dir, "ADD", conf(pod), pod).returncode == 0
    assert "from 10.9.0.5 lookup 102" in "\n".join(rules(pod))
    assert "from 2001:db8::5 lookup 103" in "\n".join(rules(pod, "-6"))
    wire(
        pod,
        host,
        "net1",
        v4="10.20.0.5/24",
        v6="2001:db8:20::5/64",
        gw4="10.20.0.1",
        gw6="",
        extra_route=False,
        metric=100,
    )
    config = conf(pod, "net1", prevResult=prev(pod, "net1", "10.20.0.5/24", "", "10.20.0.1"))
    assert sbr(plugin_dir, "ADD", config, pod, ifname="net1").returncode == 0
    assert "from 10.20.0.5 lookup 104" in "\n".join(rules(pod))
    # sbr's own default (metric 0) and the copy of main's (metric 100), as upstream makes them
    assert dsts(table(pod, 104)) == ["10.20.0.0/24", "default", "default"]


def test_concurrent_adds_in_one_pod_are_serialised_by_the_netns_lock(plugin_dir, pod, host):
    wire(
        pod,
        host,
        "net1",
        v4="10.20.0.5/24",
        v6="2001:db8:20::5/64",
        gw4="10.20.0.1",
        gw6="",
        extra_route=False,
        metric=100,
    )
    calls = [
        (conf(pod, prevResult=prev(pod, v6="")), "eth0"),
        (conf(pod, prevResult=prev(pod, "net1", "10.20.0.5/24", "", "10.20.0.1")), "net1"),
    ]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda c: sbr(plugin_dir, "ADD", c[0], pod, ifname=c[1]), calls))
    assert all(d.returncode == 0 for d in done), done
    tables = sorted(line.split()[-1] for line in rules(pod) if "from 10." in line)
    assert tables == ["100", "101"]


def test_table_adds_only_rules_and_del_removes_only_those(plugin_dir, pod):
    before = ns_exec(pod, "ip", "route", "show", "table", "all")
    ns_exec(pod, "ip", "rule", "add", "from", "10.9.0.5", "lookup", "300")
    config = conf(pod, table=1000)
    assert sbr(plugin_dir, "ADD", config, pod).returncode == 0
    assert "from 10.9.0.5 lookup 1000" in "\n".join(rules(pod))
    assert "from 2001:db8::5 lookup 1000" in "\n".join(rules(pod, "-6"))
    assert ns_exec(pod, "ip", "route", "show", "table", "all") == before
    assert sbr(plugin_dir, "CHECK", config, pod).returncode == 0
    assert sbr(plugin_dir, "DEL", config, pod).returncode == 0
    assert [line for line in rules(pod) if "10.9.0.5" in line] == [
        "32765:\tfrom 10.9.0.5 lookup 300"
    ]
    assert rules(pod, "-6") == DEFAULT_RULES["-6"]


def test_static_gateways_replace_the_prev_result_ones(plugin_dir, pod):
    ns_exec(pod, "ip", "route", "del", "default")
    done = sbr(plugin_dir, "ADD", conf(pod, gateways=["10.9.0.254", "2001:db8::fe"]), pod)
    assert done.returncode == 0, done
    defaults = {r["dst"]: r["gateway"] for r in table(pod, 100) if r["dst"] == "default"}
    assert defaults == {"default": "10.9.0.254"}
    # main's IPv6 default (same metric) is copied with replace after it, as upstream does
    assert [r["gateway"] for r in table(pod, 101, "-6") if r["dst"] == "default"] == ["2001:db8::1"]


def test_add_source_hints_keep_subnet_routes_in_main_with_a_source(plugin_dir, pod):
    done = sbr(plugin_dir, "ADD", conf(pod, addSourceHints=True), pod)
    assert done.returncode == 0, done
    main = ip_json(pod, "-4", "route", "show", "dev", "eth0")
    assert [(r["dst"], r.get("prefsrc"), r.get("scope")) for r in main] == [
        ("10.9.0.0/24", "10.9.0.5", "link")
    ]
    assert dsts(table(pod, 100)) == ["10.10.0.0/16", "10.9.0.0/24", "default"]
    main6 = ip_json(pod, "-6", "route", "show", "dev", "eth0")
    assert [(r["dst"], r.get("prefsrc")) for r in main6] == [("2001:db8::/64", "2001:db8::5")]


def test_a_failed_add_undoes_its_rules(plugin_dir, pod):
    before = kernel_state(pod)
    done = sbr(plugin_dir, "ADD", conf(pod, gateways=["10.200.0.1"]), pod)  # not on-link
    assert done.returncode == 1 and done.json["code"] == 999
    assert done.json["msg"].startswith("Failed to add default route to 10.200.0.1: ")
    assert kernel_state(pod) == before


def test_check_fails_when_a_rule_is_gone(plugin_dir, pod):
    config = conf(pod)
    assert sbr(plugin_dir, "ADD", config, pod).returncode == 0
    ns_exec(pod, "ip", "rule", "del", "from", "10.9.0.5", "lookup", "100")
    done = sbr(plugin_dir, "CHECK", config, pod)
    assert done.returncode == 1 and "no source rule for 10.9.0.5 on eth0" in done.json["msg"]
    missing = dict(config)
    del missing["prevResult"]
    assert sbr(plugin_dir, "CHECK", missing, pod).json["msg"] == "Required prevResult missing"


# -- DEL -------------------------------------------------------------------------------------


def test_del_removes_rules_and_tables_and_is_idempotent(plugin_dir, pod):
    config = conf(pod)
    assert sbr(plugin_dir, "ADD", config, pod).returncode == 0
    without_prev = {k: v for k, v in config.items() if k != "prevResult"}
    for call in (config, config, without_prev):
        done = sbr(plugin_dir, "DEL", call, pod)
        assert done.returncode == 0 and done.stdout == "", done
    assert rules(pod) == DEFAULT_RULES["-4"] and rules(pod, "-6") == DEFAULT_RULES["-6"]
    assert table(pod, 100) == [] and table(pod, 101, "-6") == []


def test_del_succeeds_when_interface_or_netns_is_gone(plugin_dir, pod):
    config = conf(pod)
    assert sbr(plugin_dir, "ADD", config, pod).returncode == 0
    ns_exec(pod, "ip", "link", "del", "eth0")
    assert sbr(plugin_dir, "DEL", config, pod).returncode == 0
    assert sbr(plugin_dir, "DEL", config, "/var/run/netns/no-such-sbr-pod").returncode == 0
    assert sbr(plugin_dir, "DEL", config, "").returncode == 0


# -- verbs and bad input ---------------------------------------------------------------------


def test_gc_status_and_version(plugin_dir, pod):
    config = dict(conf(pod), cniVersion="1.1.0")
    del config["prevResult"]
    for command in ("GC", "STATUS"):
        done = sbr(plugin_dir, command, config, pod)
        assert done.returncode == 0 and done.stdout == "", done
    versions = sbr(plugin_dir, "VERSION", None, pod).json["supportedVersions"]
    assert versions[0] == "0.1.0" and versions[-1] == "1.1.0"


@pytest.mark.parametrize(
    "extra, code, words",
    [
        ({"prevResult": None}, 999, "This plugin must be called as chained plugin"),
        ({"gateways": ["a", "b", "c"]}, 7, "cannot contain more than 2 entries"),
        (
            {"gateways": ["10.0.0.1", "10.0.0.2"]},
            7,
            "multiple IPv4 addresses: 10.0.0.1 and 10.0.0.2",
        ),
        ({"gateways": ["nope"]}, 7, "invalid static gateway IP address: nope"),
        ({"table": "100"}, 7, '"table" must be an integer'),
        ({"table": -1}, 7, "routing table id from 1"),
        ({"addSourceHints": "yes"}, 7, '"addSourceHints" must be true or false'),
        ({"prevResult": {"cniVersion": "1.0.0", "ips": []}}, 999, "No IP addresses supplied"),
        ({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "bad"}]}}, 999, "prevResult"),
    ],
)
def test_bad_input_is_a_cni_error(plugin_dir, pod, extra, code, words):
    before = kernel_state(pod)
    config = conf(pod, **extra)
    config = {k: v for k, v in config.items() if v is not None}
    done = sbr(plugin_dir, "ADD", config, pod)
    assert done.returncode == 1 and done.json["code"] == code and words in done.json["msg"], done
    assert "Traceback" not in done.stderr
    assert kernel_state(pod) == before


def test_garbage_stdin_and_missing_interface(plugin_dir, pod):
    done = sbr(plugin_dir, "ADD", None, pod, stdin=b"{not json")
    assert done.returncode == 1 and done.json["code"] == 6 and "Traceback" not in done.stderr
    done = sbr(plugin_dir, "ADD", conf(pod, "nope0"), pod, ifname="nope0")
    assert done.returncode == 1 and "Cannot find network interface nope0" in done.json["msg"]


# -- against Go's sbr 1.1.1 ------------------------------------------------------------------


def test_same_rules_and_routes_as_go_and_nothing_after_del(plugin_dir, go_bin, make_netns):
    states = {}
    for name, directory in (("go", go_bin), ("ours", plugin_dir)):
        host, pod = make_netns("sbh"), make_netns("sbp")
        wire(pod, host)
        config = conf(pod)
        done = sbr(directory, "ADD", config, pod)
        assert done.returncode == 0, done
        states[name] = kernel_state(pod)
        assert sbr(directory, "DEL", config, pod).returncode == 0
        assert rules(pod) == DEFAULT_RULES["-4"] and rules(pod, "-6") == DEFAULT_RULES["-6"]
    assert states["ours"] == states["go"]


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_del_by_the_other_implementation(plugin_dir, go_bin, pod, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    config = conf(pod)
    assert sbr(dirs[adder], "ADD", config, pod).returncode == 0
    assert sbr(dirs[deleter], "DEL", config, pod).returncode == 0
    assert rules(pod) == DEFAULT_RULES["-4"] and rules(pod, "-6") == DEFAULT_RULES["-6"]


def chain_conf(node, main):
    subnet = "10.66.0.0/24" if main == "bridge" else "10.67.0.0/24"
    config = {
        "cniVersion": "1.0.0",
        "name": f"sbr{main}",
        "type": main,
        "ipam": node.host_local(subnet, routes=[{"dst": "0.0.0.0/0"}]),
    }
    if main == "bridge":
        config.update(bridge="brsbr0", isGateway=True)
    return config


@pytest.mark.parametrize("main", ["bridge", "ptp"])
def test_chained_after_our_main_plugin_same_as_go(plugin_dir, go_bin, make_netns, tmp_path, main):
    states = {}
    for name, directory in (("go", go_bin), ("ours", plugin_dir)):
        node = Node(make_netns, tmp_path / name, main)
        pod = node.pod()
        main_conf = chain_conf(node, main)
        result = node.add(plugin_dir, main_conf, pod)
        config = {
            "cniVersion": "1.0.0",
            "name": main_conf["name"],
            "type": "sbr",
            "prevResult": result,
        }
        done = sbr(directory, "ADD", config, pod)
        assert done.returncode == 0, done
        assert {k: v for k, v in done.json.items() if k != "dns"} == result  # Go adds "dns": {}
        # the one thing that must differ: the link-local address made from a random MAC
        states[name] = re.sub(r"fe80::[0-9a-f:]+ dev", "fe80::(random) dev", kernel_state(pod))
        assert sbr(directory, "DEL", config, pod).returncode == 0
        deleted = node.run(plugin_dir, "DEL", with_prev(main_conf, result), pod=pod)
        assert deleted.returncode == 0, deleted
        assert rules(pod) == DEFAULT_RULES["-4"]
        assert ns_exec(pod, "ip", "route", "show", "table", "all").strip() == ""
    assert "lookup 100" in states["ours"]
    assert states["ours"] == states["go"]
