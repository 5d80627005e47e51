"""portmap chained after bridge, inside a test "host" netns (see l3node.Node): host ports reach
a server in the pod from an external netns, from the node itself (also via 127.0.0.1), from
another pod and from the pod itself (hairpin), with both netfilter backends."""

import os
import subprocess
import sys

import pytest
from conftest import ns_exec, run_plugin
from kit.l3node import EXTERNAL_HOST_SIDE, Node, with_prev
from kit.traffic import PORT_CLIENT as CLIENT
from kit.traffic import PORT_SERVER as SERVER

SUBNET = "10.66.0"
GATEWAY = f"{SUBNET}.1"
MAPPINGS = [
    {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 15353, "containerPort": 5353, "protocol": "udp"},
    {"hostPort": 18082, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
]


@pytest.fixture
def node(make_netns, tmp_path):
    return Node(make_netns, tmp_path, "bridge")


@pytest.fixture
def servers():
    started = []

    def start(netns):
        proc = subprocess.Popen(
            ["ip", "netns", "exec", os.path.basename(netns), sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def bridge_conf(node):
    return {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "type": "bridge",
        "bridge": "br66",
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,  # a pod reaching its own host port comes back on its own port
        "ipam": node.host_local(f"{SUBNET}.0/24", routes=[{"dst": "0.0.0.0/0"}]),
    }


def portmap_conf(prev, mappings=MAPPINGS, **extra):
    conf = {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": prev,
    }
    conf.update(extra)
    return conf


def portmap(plugin_dir, node, command, conf, pod, cid="ctr1"):
    return run_plugin(
        plugin_dir, "portmap", command, conf, netns=pod, container_id=cid, in_netns=node.host
    )


def attach(plugin_dir, node, pod, cid="ctr1", **extra):
    """bridge (from our plugin dir) then portmap, like a conflist."""
    prev = node.add(plugin_dir, bridge_conf(node), pod, cid=cid)
    conf = portmap_conf(prev, **extra)
    done = portmap(plugin_dir, node, "ADD", conf, pod, cid)
    assert done.returncode == 0, done
    assert done.json == prev  # portmap passes the result through
    return conf


def ask(netns, proto, host, port):
    return ns_exec(netns, sys.executable, "-c", CLIENT, proto, host, str(port)).strip()


def portmap_rules(node) -> str:
    out = ns_exec(node.host, "iptables-save", "-t", "nat")
    lines = [line for line in out.splitlines() if "CNI-DN-" in line or "hostport" in line]
    nft = ns_exec(node.host, "nft", "list", "ruleset")
    lines += [
        line for line in nft.splitlines() if "dnat to" in line or "masquerade comment" in line
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_host_ports_reachable_from_everywhere(plugin_dir, node, servers, make_netns, backend):
    pod, other = node.pod(), node.pod()
    servers(pod)
    conf = attach(plugin_dir, node, pod, backend=backend)
    node.add(plugin_dir, bridge_conf(node), other, cid="other")
    # From outside the node, to the node's address.
    assert ask(node.external, "tcp", EXTERNAL_HOST_SIDE, 18080) == "tcp from 192.168.200.2"
    assert ask(node.external, "udp", EXTERNAL_HOST_SIDE, 15353).startswith("udp from")
    # From the node itself, to its own address and to localhost (route_localnet + SNAT).
    assert ask(node.host, "tcp", EXTERNAL_HOST_SIDE, 18080).startswith("tcp from")
    assert ask(node.host, "tcp", "127.0.0.1", 18080) == f"tcp from {GATEWAY}"
    # From another pod: upstream's iptables rules masquerade the whole container subnet,
    # its nftables rules only the container itself. From the pod itself: hairpin, masqueraded.
    seen = GATEWAY if backend == "iptables" else f"{SUBNET}.3"
    assert ask(other, "tcp", GATEWAY, 18080) == f"tcp from {seen}"
    assert ask(pod, "tcp", GATEWAY, 18080) == f"tcp from {GATEWAY}"
    # hostIP 127.0.0.1: the node's localhost only.
    assert ask(node.host, "tcp", "127.0.0.1", 18082).startswith("tcp from")
    assert ask(node.external, "tcp", EXTERNAL_HOST_SIDE, 18082).startswith("failed")
    done = portmap(plugin_dir, node, "CHECK", conf, pod)
    assert done.returncode == 0, done
    done = portmap(plugin_dir, node, "DEL", conf, pod)
    assert done.returncode == 0, done
    assert portmap_rules(node) == ""
    assert ask(node.external, "tcp", EXTERNAL_HOST_SIDE, 18080).startswith("failed")


def test_no_mappings_touches_nothing(plugin_dir, node):
    pod = node.pod()
    prev = node.add(plugin_dir, bridge_conf(node), pod)
    before = ns_exec(node.host, "iptables-save", "-t", "nat")
    done = portmap(plugin_dir, node, "ADD", portmap_conf(prev, mappings=[]), pod)
    assert done.returncode == 0 and done.json == prev
    assert "CNI-HOSTPORT" not in ns_exec(node.host, "iptables-save", "-t", "nat")
    assert before.count("\n-A") == ns_exec(node.host, "iptables-save", "-t", "nat").count("\n-A")


def test_del_without_prev_result_or_mappings_removes_the_rules(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod)
    bare = {k: v for k, v in conf.items() if k not in ("prevResult", "runtimeConfig")}
    for _ in range(2):
        done = portmap(plugin_dir, node, "DEL", bare, pod)
        assert done.returncode == 0, done
    assert portmap_rules(node) == ""


def test_repeated_add_does_not_double_rules(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod)
    first = portmap_rules(node)
    assert portmap(plugin_dir, node, "ADD", conf, pod).returncode == 0
    assert portmap_rules(node) == first


def test_check_notices_a_missing_rule(plugin_dir, node):
    pod = node.pod()
    conf = attach(plugin_dir, node, pod)
    ns_exec(node.host, "iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT")
    done = portmap(plugin_dir, node, "CHECK", conf, pod)
    assert done.returncode == 1 and "could not check ipv4 dnat" in done.json["msg"]


def test_gc_removes_chains_of_stale_containers(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    for number, pod in enumerate(pods):
        attach(plugin_dir, node, pod, cid=f"c{number}", mappings=[MAPPINGS[number]])
    gc = {
        "cniVersion": "1.1.0",
        "name": "pmnet",
        "type": "portmap",
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
    }
    done = portmap(plugin_dir, node, "GC", gc, "")
    assert done.returncode == 0, done
    rules = portmap_rules(node)
    assert 'id: \\"c0\\"' not in rules and 'id: \\"c1\\"' in rules


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"markMasqBit": 32}, "MasqMarkBit must be between 0 and 31"),
        ({"markMasqBit": 3, "externalSetMarkChain": "X"}, "Cannot specify externalSetMarkChain"),
        ({"backend": "nftables", "externalSetMarkChain": "X"}, "nftables backend was requested"),
        ({"backend": "pf"}, 'unrecognized backend "pf"'),
        (
            {
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 0, "containerPort": 1, "protocol": "tcp"}]
                }
            },
            "Invalid host port number: 0",
        ),
        (
            {
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]
                }
            },
            'invalid protocol "icmp"',
        ),
    ],
)
def test_bad_config_is_refused(plugin_dir, node, extra, message):
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.66.0.2/24"}]}
    done = portmap(plugin_dir, node, "ADD", portmap_conf(prev, **extra), node.pod())
    assert done.returncode == 1 and done.json["code"] == 7 and message in done.json["msg"]
    assert portmap_rules(node) == ""


def test_add_needs_prev_result(plugin_dir, node):
    conf = portmap_conf(None)
    del conf["prevResult"]
    done = portmap(plugin_dir, node, "ADD", conf, node.pod())
    assert done.json["msg"] == "must be called as chained plugin"


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_same_rules_as_go_and_cross_deletion(plugin_dir, go_bin, node, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    pod = node.pod()
    prev = node.add(plugin_dir, bridge_conf(node), pod)
    conf = portmap_conf(prev)
    saved = {}
    for name in ("go", "ours"):
        assert portmap(dirs[name], node, "ADD", conf, pod).returncode == 0
        saved[name] = portmap_rules(node)
        assert portmap(dirs[name], node, "DEL", conf, pod).returncode == 0
    assert saved["go"] == saved["ours"] != ""
    assert portmap(dirs[adder], node, "ADD", conf, pod).returncode == 0
    done = portmap(dirs[deleter], node, "DEL", with_prev(conf, prev), pod)
    assert done.returncode == 0, done
    assert portmap_rules(node) == ""


def test_udp_conntrack_entries_to_a_mapped_port_are_cleared(plugin_dir, node):
    # A flow to the host port seen before the mapping existed would keep bypassing the DNAT.
    ns_exec(
        node.host,
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "192.168.200.2",
        "-d",
        EXTERNAL_HOST_SIDE,
        "--sport",
        "4000",
        "--dport",
        "15353",
        "-t",
        "120",
    )
    stale = ["conntrack", "-L", "-p", "udp", "--orig-port-dst", "15353"]
    assert "15353" in ns_exec(node.host, *stale, check=False)
    attach(plugin_dir, node, node.pod())
    assert "15353" not in ns_exec(node.host, *stale, check=False)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_udp_flow_through_a_host_port_is_gone_after_del(plugin_dir, node, servers, backend):
    pod = node.pod()
    servers(pod)
    conf = attach(plugin_dir, node, pod, backend=backend)
    assert ask(node.external, "udp", EXTERNAL_HOST_SIDE, 15353).startswith("udp from")
    pod_ip = conf["prevResult"]["ips"][0]["address"].split("/")[0]
    flows = ["conntrack", "-L", "-p", "udp", "--reply-src", pod_ip]
    assert "dport=15353" in ns_exec(node.host, *flows, check=False)
    bare = {k: v for k, v in conf.items() if k not in ("prevResult", "runtimeConfig")}
    assert portmap(plugin_dir, node, "DEL", bare, pod).returncode == 0
    assert ns_exec(node.host, *flows, check=False) == ""


def test_backend_is_nftables_when_iptables_does_not_work(plugin_dir, node, tmp_path):
    # iptables-restore is there, but `iptables` itself fails (e.g. the legacy variant on a
    # kernel without its tables): the probe picks nftables, as upstream's does.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "iptables").write_text("#!/bin/sh\necho 'iptables: no tables' >&2\nexit 3\n")
    os.chmod(fake / "iptables", 0o755)
    pod = node.pod()
    prev = node.add(plugin_dir, bridge_conf(node), pod)
    conf = portmap_conf(prev)
    env = {"PATH": f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin"}
    done = run_plugin(plugin_dir, "portmap", "ADD", conf, netns=pod, in_netns=node.host, env=env)
    assert done.returncode == 0, done
    nft = ns_exec(node.host, "nft", "list", "table", "ip", "cni_hostport")
    assert "dnat to 10.66.0.2:80" in nft
    assert "CNI-DN-" not in ns_exec(node.host, "iptables-save", "-t", "nat")
