"""firewall chained after bridge, inside a test "host" netns (see l3node.Node)."""

import os

import pytest
from conftest import ns_exec, run_plugin
from kit.l3node import EXTERNAL, Node, pings, with_prev


@pytest.fixture
def node(make_netns, tmp_path):
    return Node(make_netns, tmp_path, "bridge")


RECORDS: dict = {}


@pytest.fixture(autouse=True)
def records_dir(tmp_path):
    """The plugin's per-attachment records go to the test's own directory (the Go plugin
    ignores the key)."""
    RECORDS["dataDir"] = str(tmp_path / "firewall")
    yield RECORDS["dataDir"]
    RECORDS.clear()


def bridge_conf(node, bridge="brfw", subnet="10.91.0.0/24", name="fwnet"):
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "ipam": node.host_local(subnet, routes=[{"dst": "0.0.0.0/0"}]),
    }


def fw_conf(prev, name="fwnet", **extra):
    conf = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "firewall",
        "prevResult": prev,
        "dataDir": RECORDS["dataDir"],
    }
    conf.update(extra)
    return conf


def firewall(plugin_dir, node, command, conf, pod="", cid="ctr1", **kw):
    return run_plugin(
        plugin_dir, "firewall", command, conf, netns=pod, container_id=cid, in_netns=node.host, **kw
    )


def attach(plugin_dir, node, pod, cid="ctr1", bridge="brfw", subnet="10.91.0.0/24", **extra):
    prev = node.add(plugin_dir, bridge_conf(node, bridge, subnet), pod, cid=cid)
    conf = fw_conf(prev, **extra)
    done = firewall(plugin_dir, node, "ADD", conf, pod, cid)
    assert done.returncode == 0, done
    assert done.json == prev
    return conf


def filter_rules(node, tool="iptables-save") -> list:
    out = ns_exec(node.host, tool, "-t", "filter")
    return [line for line in out.splitlines() if line.startswith(("-A", ":CNI"))]


def nft_rules(node) -> str:
    return ns_exec(node.host, "nft", "list", "ruleset")


def test_forward_drop_policy_is_opened_for_the_pod(plugin_dir, node):
    pod = node.pod()
    prev = node.add(plugin_dir, bridge_conf(node), pod)
    ns_exec(node.host, "iptables", "-P", "FORWARD", "DROP")  # the test host's own policy
    assert not pings(pod, EXTERNAL)
    conf = fw_conf(prev, backend="iptables")
    assert firewall(plugin_dir, node, "ADD", conf, pod).returncode == 0
    assert pings(pod, EXTERNAL)
    assert firewall(plugin_dir, node, "CHECK", conf, pod).returncode == 0
    for _ in range(2):
        assert firewall(plugin_dir, node, "DEL", conf, pod).returncode == 0
    assert not pings(pod, EXTERNAL)
    assert not [r for r in filter_rules(node) if "10.91.0.2" in r]


def test_rules_and_comments_are_upstreams(plugin_dir, node):
    pod = node.pod()
    attach(plugin_dir, node, pod, backend="iptables")
    assert filter_rules(node) == [
        ":CNI-ADMIN - [0:0]",
        ":CNI-FORWARD - [0:0]",
        '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
        '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
        "-A CNI-FORWARD -d 10.91.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s 10.91.0.2/32 -j ACCEPT",
    ]


def test_same_bridge_policy_isolates_bridges(plugin_dir, node):
    pods = [node.pod(), node.pod(), node.pod()]
    attach(plugin_dir, node, pods[0], "a1", "brfw1", "10.92.0.0/24", ingressPolicy="same-bridge")
    attach(plugin_dir, node, pods[1], "a2", "brfw1", "10.92.0.0/24", ingressPolicy="same-bridge")
    attach(plugin_dir, node, pods[2], "b1", "brfw2", "10.93.0.0/24", ingressPolicy="same-bridge")
    assert pings(pods[0], "10.92.0.3")  # same bridge: open
    assert not pings(pods[0], "10.93.0.2")  # another isolated bridge: dropped
    assert pings(pods[0], "10.92.0.1")  # the gateway itself (INPUT, not FORWARD)


def test_isolated_policy_drops_traffic_within_the_bridge(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    bridge = bridge_conf(node, "brfwi", "10.94.0.0/24") | {"hairpinMode": True}
    prevs = [node.add(plugin_dir, bridge, pod, cid=f"i{n}") for n, pod in enumerate(pods)]
    for number, pod in enumerate(pods):
        conf = fw_conf(prevs[number], ingressPolicy="isolated")
        assert firewall(plugin_dir, node, "ADD", conf, pod, f"i{number}").returncode == 0
    rules = filter_rules(node)
    assert any("-i brfwi -o brfwi" in r and "-j DROP" in r for r in rules)


def test_nftables_backend(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod, backend="nftables", ingressPolicy="same-bridge")
    rules = nft_rules(node)
    assert "table inet cni_firewall" in rules
    # One map element per address leads to the attachment's chain, which accepts (#22).
    assert "ip saddr vmap @pods4" in rules
    assert "10.91.0.2 : goto pod-" in rules
    assert 'accept comment "cni-firewall fwnet ctr1 eth0"' in rules
    assert 'iifname "brfw" oifname != "brfw" jump isolation-out' in rules
    assert firewall(plugin_dir, node, "CHECK", conf, pod).returncode == 0
    bare = {k: v for k, v in conf.items() if k != "prevResult"}
    for _ in range(2):
        assert firewall(plugin_dir, node, "DEL", bare, pod).returncode == 0
    assert "cni-firewall fwnet ctr1" not in nft_rules(node)
    assert filter_rules(node) == []  # nothing in iptables


def test_nftables_gc(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    for number, pod in enumerate(pods):
        attach(plugin_dir, node, pod, cid=f"g{number}", backend="nftables")
    gc = {
        "cniVersion": "1.1.0",
        "name": "fwnet",
        "type": "firewall",
        "backend": "nftables",
        "cni.dev/valid-attachments": [{"containerID": "g1", "ifname": "eth0"}],
    }
    assert firewall(plugin_dir, node, "GC", gc).returncode == 0
    rules = nft_rules(node)
    assert "fwnet g0 eth0" not in rules and "fwnet g1 eth0" in rules


def test_check_notices_a_missing_rule(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod, backend="iptables")
    ns_exec(node.host, "iptables", "-D", "CNI-FORWARD", "-s", "10.91.0.2/32", "-j", "ACCEPT")
    done = firewall(plugin_dir, node, "CHECK", conf, pod)
    assert done.returncode == 1 and "-s 10.91.0.2/32 -j ACCEPT not found" in done.json["msg"]


def test_del_without_prev_result_and_after_a_flush(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod, backend="iptables")
    bare = {k: v for k, v in conf.items() if k != "prevResult"}
    assert firewall(plugin_dir, node, "DEL", bare, pod).returncode == 0
    # Beyond upstream (which removes nothing then): the attachment's record finds the rules,
    # as when a runtime's result cache is gone (test_state_gc.py: also without the netns).
    assert [r for r in filter_rules(node) if "10.91.0.2" in r] == []
    assert firewall(plugin_dir, node, "ADD", conf, pod).returncode == 0
    ns_exec(node.host, "iptables", "-F")
    ns_exec(node.host, "iptables", "-X")
    assert firewall(plugin_dir, node, "DEL", conf, pod).returncode == 0


@pytest.mark.parametrize(
    "extra, code, message",
    [
        ({"backend": "pf"}, 7, 'unknown firewall backend "pf"'),
        ({"ingressPolicy": "closed"}, 7, 'unknown ingress policy: "closed"'),
        ({"cniVersion": "0.3.1"}, 1, "incompatible CNI versions"),
        ({"prevResult": None}, 999, "missing prevResult from earlier plugin"),
    ],
)
def test_bad_input(plugin_dir, node, extra, code, message):
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.91.0.9/24"}]}
    conf = {k: v for k, v in fw_conf(prev, **extra).items() if v is not None}
    done = firewall(plugin_dir, node, "ADD", conf, node.pod())
    assert done.returncode == 1 and done.json["code"] == code and message in done.json["msg"]
    assert filter_rules(node) == []


def test_firewalld_backend_calls_the_zone_api(plugin_dir, node, tmp_path):
    # No firewalld here: a stand-in `busctl` on PATH records the D-Bus calls the plugin makes.
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    (fake / "busctl").write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "b true"\n')
    os.chmod(fake / "busctl", 0o755)
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.91.0.9/24"}, {"address": "fd91::9/64"}]}
    conf = fw_conf(prev, backend="firewalld", firewalldZone="cni")
    env = {"PATH": f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin"}
    for command in ("ADD", "CHECK", "DEL"):
        done = firewall(plugin_dir, node, command, conf, node.pod(), env=env)
        assert done.returncode == 0, done
    method = "org.fedoraproject.FirewallD1.zone"
    base = f"--system call org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1 {method}"
    assert log.read_text().splitlines() == [
        f"{base} addSource ss cni 10.91.0.9/32",
        f"{base} addSource ss cni fd91::9/128",
        f"{base} querySource ss cni 10.91.0.9/32",
        f"{base} querySource ss cni fd91::9/128",
        f"{base} removeSource ss cni 10.91.0.9/32",
        f"{base} removeSource ss cni fd91::9/128",
    ]


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_same_rules_as_go_and_cross_deletion(plugin_dir, go_bin, node, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    pod = node.pod()
    prev = node.add(plugin_dir, bridge_conf(node), pod)
    conf = fw_conf(prev, backend="iptables")
    seen = {}
    for name in ("go", "ours"):
        assert firewall(dirs[name], node, "ADD", conf, pod).returncode == 0
        seen[name] = filter_rules(node)
        assert firewall(dirs[name], node, "DEL", conf, pod).returncode == 0
    assert seen["go"] == seen["ours"]
    assert firewall(dirs[adder], node, "ADD", conf, pod).returncode == 0
    other = "ours" if adder == "go" else "go"
    assert firewall(dirs[other], node, "CHECK", conf, pod).returncode == 0
    assert firewall(dirs[deleter], node, "DEL", with_prev(conf, prev), pod).returncode == 0
    assert not [r for r in filter_rules(node) if "10.91.0.2" in r]
