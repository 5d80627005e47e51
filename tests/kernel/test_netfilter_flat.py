"""Netfilter work that does not grow with the pods on a node (#22): a pod's DEL changes only its
own rules and, with iptables, reads no table; the backend probe runs once per boot and netns
(cached in PYCNI_NETFILTER_CACHE) and again whenever the cache does not match.

Pods are bridge (ipMasq) + portmap (a host port each) + firewall, run inside a test "host"
netns (l3node.Node). The netfilter tools are wrapped by scripts that log each run, so a test
sees which processes a call started.
"""

import json
import os
import re

import pytest
from conftest import ns_exec, run_plugin
from kit.l3node import Node

SUBNET = "10.68.0"
TOOLS = (
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
    "nft",
)
COUNTERS = re.compile(r" \[\d+:\d+\]$")
LOGGING_TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
exec /usr/sbin/$(basename "$0") "$@"
"""


@pytest.fixture
def node(make_netns, tmp_path):
    return Node(make_netns, tmp_path, "bridge")


class Tools:
    """A PATH whose netfilter tools log their command lines before running the real ones."""

    def __init__(self, directory):
        directory.mkdir()
        self.log = directory / "calls.log"
        self.log.write_text("")
        for tool in TOOLS:
            path = directory / tool
            path.write_text(LOGGING_TOOL.format(log=self.log))
            path.chmod(0o755)
        self.path = f"{directory}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def take(self) -> list:
        """The calls since the last take."""
        calls = self.log.read_text().splitlines()
        self.log.write_text("")
        return calls


@pytest.fixture
def tools(tmp_path):
    return Tools(tmp_path / "tools")


class Pods:
    """bridge + portmap + firewall attachments on one node, one backend for all three."""

    def __init__(self, plugin_dir, node, tmp_path, backend, env):
        self.plugin_dir = plugin_dir
        self.node = node
        self.backend = backend
        self.env = env
        self.firewall_dir = str(tmp_path / "firewall")
        self.results: dict = {}

    def confs(self, number: int) -> list:
        base = {"cniVersion": "1.0.0", "name": "flatnet"}
        bridge = dict(
            base,
            type="bridge",
            bridge="br68",
            isGateway=True,
            ipMasq=True,
            ipam=self.node.host_local(f"{SUBNET}.0/24", routes=[{"dst": "0.0.0.0/0"}]),
        )
        if self.backend:
            bridge["ipMasqBackend"] = self.backend
        portmap = dict(
            base,
            type="portmap",
            capabilities={"portMappings": True},
            runtimeConfig={
                "portMappings": [
                    {"hostPort": 21000 + number, "containerPort": 80, "protocol": "tcp"}
                ]
            },
        )
        firewall = dict(base, type="firewall", dataDir=self.firewall_dir, backend="iptables")
        if self.backend:
            portmap["backend"] = self.backend
            firewall["backend"] = self.backend
        return [bridge, portmap, firewall]

    def run(self, plugin: str, command: str, conf: dict, number: int, netns: str):
        return run_plugin(
            self.plugin_dir,
            plugin,
            command,
            conf,
            netns=netns,
            container_id=f"flat{number}",
            in_netns=self.node.host,
            env=self.env,
        )

    def add(self, number: int) -> dict:
        netns = self.node.pod()
        prev = None
        for conf in self.confs(number):
            if prev is not None:
                conf = dict(conf, prevResult=prev)
            done = self.run(conf["type"], "ADD", conf, number, netns)
            assert done.returncode == 0, done
            prev = done.json
        self.results[number] = (netns, prev)
        return prev

    def delete(self, number: int) -> None:
        netns, final = self.results.pop(number)
        for conf in reversed(self.confs(number)):
            done = self.run(conf["type"], "DEL", dict(conf, prevResult=final), number, netns)
            assert done.returncode == 0, done


def rules(node) -> list:
    """Every rule and chain of the host, without counters and timestamps."""
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        for table in ("nat", "filter"):
            out = ns_exec(node.host, tool, "-t", table)
            lines += [
                f"{tool} {COUNTERS.sub('', line)}"
                for line in out.splitlines()
                if not line.startswith("#")
            ]
    # nftables objects one a line (the text listing wraps map elements); only our tables, not
    # those iptables-nft made for the rules above.
    for item in json.loads(ns_exec(node.host, "nft", "-j", "list", "ruleset"))["nftables"]:
        kind, body = next(iter(item.items()))
        if not str(body.get("table", "")).startswith("cni"):
            continue
        where = f"{body['family']} {body['table']}"
        if kind == "rule":
            expr = json.dumps(body["expr"], sort_keys=True)
            lines.append(f"rule {where} {body['chain']} {expr} {body.get('comment', '')}")
        elif kind in ("chain", "map", "set"):
            lines.append(f"{kind} {where} {body['name']}")
            lines += [
                f"element {where} {body['name']} {json.dumps(e)}" for e in body.get("elem", [])
            ]
    return lines


def marks_of(result: dict, number: int) -> list:
    """Strings that name one pod in a rule: its address, container ID, chain name hashes."""
    from libcni.netfilter.masquerade import nft_prefix
    from libcni.protocol.names import hashed_name
    from meta.firewall.nftables import chain_of
    from meta.portmap.nftables import chains_of as portmap_chains

    address = result["ips"][0]["address"].split("/")[0]
    cid = f"flat{number}"
    return [
        f"{address}/",
        f"{address} ",
        f"{address}:",
        f'"{address}"',
        cid,
        chain_of("flatnet", cid, "eth0"),
        *portmap_chains("flatnet", cid),
        nft_prefix("flatnet", "eth0", cid),
        hashed_name("CNI-", "flatnet", cid),
        hashed_name("CNI-DN-", "flatnet", cid),
    ]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_pods_del_changes_only_its_own_rules(plugin_dir, node, tmp_path, backend):
    pods = Pods(plugin_dir, node, tmp_path, backend, {})
    for number in range(1, 5):
        pods.add(number)
    before = rules(node)
    result = pods.add(5)
    added = [line for line in rules(node) if line not in before]
    marks = marks_of(result, 5)
    assert added, "the pod's ADD added no rule"
    assert [line for line in added if not any(m in line for m in marks)] == []
    pods.delete(5)
    assert rules(node) == before
    for number in range(1, 5):  # the others still have theirs
        address = pods.results[number][1]["ips"][0]["address"].split("/")[0]
        assert any(address in line for line in before)
    third = pods.results[3][1]
    pods.delete(3)
    after = rules(node)
    removed = [line for line in before if line not in after]
    assert removed and [r for r in removed if not any(m in r for m in marks_of(third, 3))] == []
    assert [line for line in after if any(m in line for m in marks_of(third, 3))] == []


def test_iptables_add_and_del_of_a_pod_read_no_table(plugin_dir, node, tmp_path, tools):
    pods = Pods(plugin_dir, node, tmp_path, "iptables", {"PATH": tools.path})
    for number in range(1, 4):
        pods.add(number)
    tools.take()
    pods.add(4)
    added = tools.take()
    pods.delete(4)
    deleted = tools.take()
    for calls in (added, deleted):
        assert [c for c in calls if c.startswith(("iptables-save", "ip6tables-save"))] == []
        assert [c for c in calls if " -S" in c or " -L" in c or c.startswith("nft")] == []
    # One iptables-restore per plugin call (bridge, portmap, firewall), nothing else.
    assert [c.split()[0] for c in added] == ["iptables-restore"] * 3
    assert [c.split()[0] for c in deleted] == ["iptables-restore"] * 3


def cache_file(cache_dir, node) -> str:
    return os.path.join(cache_dir, f"netfilter-backend.{os.stat(node.host).st_ino}")


def probes(calls: list) -> list:
    return [c for c in calls if c.startswith("iptables ") and " -S INPUT" in c]


def first_pod_probed(plugin_dir, node, tmp_path, tools):
    """Pods on `node` whose netfilter tools are `tools` and probe cache a file of the test's,
    after a first ADD (which probes and writes the cache): (pods, the cache file)."""
    cache = tmp_path / "probe-cache"
    env = {"PATH": tools.path, "PYCNI_NETFILTER_CACHE": str(cache)}
    pods = Pods(plugin_dir, node, tmp_path, "", env)
    pods.add(1)
    return pods, cache_file(cache, node)


def test_backend_probe_runs_once_per_boot_and_netns(plugin_dir, node, tmp_path, tools):
    pods, path = first_pod_probed(plugin_dir, node, tmp_path, tools)
    assert len(probes(tools.take())) == 1
    with open(path) as f:
        assert f.read().endswith(" iptables\n")
    pods.add(2)
    calls = tools.take()
    assert probes(calls) == []
    assert calls, "no netfilter tool ran at all"
    pods.delete(2)
    assert probes(tools.take()) == []


@pytest.mark.parametrize("stale", ["another boot", "another iptables", "garbage"])
def test_a_cache_that_does_not_match_is_probed_again(plugin_dir, node, tmp_path, tools, stale):
    pods, path = first_pod_probed(plugin_dir, node, tmp_path, tools)
    with open(path) as f:
        boot, netns, binary, _ = f.read().split()
    lie = {
        "another boot": f"{boot[:-4]}ffff {netns} {binary} nftables\n",
        "another iptables": f"{boot} {netns} /usr/sbin/iptables-gone:1 nftables\n",
        "garbage": "nftables\n",
    }[stale]
    with open(path, "w") as f:
        f.write(lie)
    tools.take()
    result = pods.add(2)
    assert len(probes(tools.take())) == 1
    address = result["ips"][0]["address"].split("/")[0]
    nat = ns_exec(node.host, "iptables-save", "-t", "nat")
    assert f"-s {address}/32" in nat  # masqueraded by iptables, as the probe says
    with open(path) as f:
        assert f.read() == f"{boot} {netns} {binary} iptables\n"


def test_a_matching_cache_is_believed(plugin_dir, node, tmp_path, tools):
    # The cached answer decides without a probe: a (made up) "nftables" puts the pod's
    # masquerade into nftables on a node where iptables works.
    pods, path = first_pod_probed(plugin_dir, node, tmp_path, tools)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(" iptables\n", " nftables\n"))
    tools.take()
    result = pods.add(2)
    assert probes(tools.take()) == []
    address = result["ips"][0]["address"].split("/")[0]
    assert f"ip saddr {address}" in ns_exec(node.host, "nft", "list", "ruleset")
    pods.delete(2)
    assert f"ip saddr {address}" not in ns_exec(node.host, "nft", "list", "ruleset")
