"""No state outlives its pod: every stateful plugin, run as a list through libcni's list
functions (libcni.runtime.netlist.Runtime) in a test "host" netns (l3node.Node), finds its
state again from (network, container ID, ifname) alone.

- ADD, wipe the runtime's result cache, DEL (so no prevResult, no capability args): nothing of
  the pod is left (rules, chains, nft rules, links, qdiscs, ifbs, files, reservations,
  conntrack entries).
- ADD three pods, wipe the cache, remove two pods' netns (the runtime lost them), GC with the
  third valid: the two leave nothing, the third keeps exactly what it had.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import ip_json, ns_exec
from kit.k8snode import driver_argv, run_driver
from kit.l3node import EXTERNAL, EXTERNAL_HOST_SIDE, Node

from libcni.netfilter import masquerade
from libcni.protocol.names import hashed_name
from meta.firewall import nftables as firewall_nft
from meta.portmap import hostports

NET = "gcnet"
SUBNET = "10.98.0"
RATE = {
    "ingressRate": 8_000_000,
    "ingressBurst": 400_000,
    "egressRate": 8_000_000,
    "egressBurst": 400_000,
}

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from libcni.runtime import conflist, netlist
plugin_dir, list_path, cache_dir, verb, cid, netns, caps = sys.argv[2:9]
runtime = netlist.Runtime([plugin_dir], cache_dir=cache_dir)
network = conflist.list_from_file(list_path)
if verb == "gc":
    runtime.gc(network, [(c, "eth0") for c in json.loads(caps)])
    sys.exit(0)
rt = netlist.RuntimeConf(container_id=cid, netns=netns, ifname="eth0",
                         capability_args=json.loads(caps))
if verb == "add":
    print(json.dumps(runtime.add(network, rt).to_version("1.1.0")))
else:
    runtime.delete(network, rt)
"""


def bridge(backend="iptables"):
    return {
        "type": "bridge",
        "bridge": "gcbr0",
        "isGateway": True,
        "ipMasq": True,
        "ipMasqBackend": backend,
        "hairpinMode": True,
    }


PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}
BANDWIDTH = {"type": "bandwidth", "capabilities": {"bandwidth": True}}

LISTS = {
    "bridge-iptables": [bridge()],
    "bridge-nftables": [bridge("nftables")],
    "ptp": [{"type": "ptp", "ipMasq": True}],
    "portmap-iptables": [bridge(), dict(PORTMAP, backend="iptables")],
    "portmap-nftables": [bridge("nftables"), dict(PORTMAP, backend="nftables")],
    "firewall-iptables": [bridge(), {"type": "firewall", "backend": "iptables"}],
    "firewall-nftables": [bridge(), {"type": "firewall", "backend": "nftables"}],
    "tuning": [bridge(), {"type": "tuning", "mtu": 1400, "promisc": True}],
    "bandwidth": [bridge(), BANDWIDTH],
    "k8s": [
        bridge(),
        PORTMAP,
        BANDWIDTH,
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "1024"}, "mtu": 1400},
        {"type": "firewall", "backend": "iptables"},
    ],
}


class Harness:
    def __init__(self, make_netns, tmp_path, plugins: list):
        self.node = Node(make_netns, tmp_path, "bridge")
        self.cache = str(tmp_path / "cache")
        self.list_path = str(tmp_path / "gc.conflist")
        self.files = [str(tmp_path / "tuning"), str(tmp_path / "firewall")]
        self.types = {p["type"] for p in plugins}
        plugins = [dict(p) for p in plugins]
        main = plugins[0]
        main["ipam"] = self.node.host_local(f"{SUBNET}.0/24", routes=[{"dst": "0.0.0.0/0"}])
        for plugin in plugins:
            if plugin["type"] == "tuning":
                plugin["dataDir"] = self.files[0]
            if plugin["type"] == "firewall":
                plugin["dataDir"] = self.files[1]
        with open(self.list_path, "w") as f:
            json.dump({"cniVersion": "1.1.0", "name": NET, "plugins": plugins}, f)

    def run(self, plugin_dir, verb, cid="", pod="", caps=None):
        argv = driver_argv(
            self.node.host,
            plugin_dir,
            self.list_path,
            self.cache,
            verb,
            cid,
            pod,
            caps if caps is not None else {},
            driver=DRIVER,
        )
        return run_driver(argv, verb)

    def add(self, plugin_dir, cid: str, number: int) -> tuple:
        """ADD a pod with a host port and limits; (its netns, its address)."""
        pod = self.node.pod()
        caps = {
            "portMappings": [{"hostPort": 30080 + number, "containerPort": 80, "protocol": "udp"}],
            "bandwidth": RATE,
        }
        result = self.run(plugin_dir, "add", cid, pod, caps)
        address = result["ips"][0]["address"].split("/")[0]
        if "portmap" in self.types:
            self.udp_flow(address, number)
        return pod, address

    def udp_flow(self, address: str, number: int) -> None:
        """A conntrack entry as a UDP flow through the pod's host port leaves it (DNATed)."""
        ns_exec(
            self.node.host,
            "conntrack",
            "-I",
            "-p",
            "udp",
            "-s",
            EXTERNAL,
            "-d",
            EXTERNAL_HOST_SIDE,
            "--sport",
            str(4000 + number),
            "--dport",
            str(30080 + number),
            "-r",
            address,
            "-q",
            EXTERNAL,
            "--reply-port-src",
            "80",
            "--reply-port-dst",
            str(4000 + number),
            "-t",
            "120",
        )

    def wipe_cache(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def state(self, cid: str, address: str) -> list:
        """Everything on the node that belongs to this pod."""
        host = self.node.host
        ip = re.compile(re.escape(address) + r"(?![0-9])")
        names = (
            cid,
            hashed_name("bwp", NET, cid, 15),
            hostports.dnat_chain(NET, cid),
            masquerade.chain_name(NET, cid),
            masquerade.nft_prefix(NET, "eth0", cid),
            firewall_nft.chain_of(NET, cid, "eth0"),
        )
        found = []

        def mine(line: str) -> bool:
            return bool(ip.search(line)) or any(name in line for name in names)

        for tool in ("iptables-save", "ip6tables-save"):
            found += [line for line in ns_exec(host, tool).splitlines() if mine(line)]
        # A verdict map lists several pods' elements a line: one entry each.
        found += [
            part
            for line in ns_exec(host, "nft", "list", "ruleset").splitlines()
            for part in (
                [e.replace("elements = {", "").strip(" \t,{}") for e in line.split(", ")]
                if " : goto " in line
                else [line.strip()]
            )
            if mine(part)
        ]
        found += [
            "route " + line
            for line in ns_exec(host, "ip", "route", "show", "table", "all").splitlines()
            if mine(line)
        ]
        found += ["link " + e["ifname"] for e in ip_json(host, "link", "show") if mine(e["ifname"])]
        # The third field is the entry's timeout, which counts down.
        found += [
            "conntrack " + " ".join(line.split()[:2] + line.split()[3:])
            for line in ns_exec(host, "conntrack", "-L", check=False).splitlines()
            if mine(line)
        ]
        for folder in self.files:
            for root, _, files in os.walk(folder):
                found += [os.path.join(root, f) for f in files if cid in f]
        found += [f"reservation {r}" for r in self.node.reservations(NET) if r == address]
        return sorted(found)

    def host_leftovers(self) -> list:
        """What no pod may leave once none is attached: veths, their qdiscs, ifbs."""
        host = self.node.host
        found = [
            e["ifname"]
            for e in ip_json(host, "link", "show")
            if e["ifname"].startswith(("bwp", "veth"))
        ]
        found += [
            f"{q['kind']} on {q['dev']}"
            for q in json.loads(ns_exec(host, "tc", "-j", "qdisc", "show"))
            if q["kind"] in ("tbf", "ingress")
        ]
        return found


@pytest.fixture(params=sorted(LISTS))
def harness(request, make_netns, tmp_path):
    return Harness(make_netns, tmp_path, LISTS[request.param])


def test_del_without_cache_leaves_nothing(plugin_dir, harness):
    pod, address = harness.add(plugin_dir, "gcpod0", 0)
    assert harness.state("gcpod0", address) != []
    harness.wipe_cache()
    harness.run(plugin_dir, "del", "gcpod0", pod)
    assert harness.state("gcpod0", address) == []
    assert harness.host_leftovers() == []


def test_gc_keeps_only_the_valid_attachment(plugin_dir, harness, make_netns):
    pods = [harness.add(plugin_dir, f"gcpod{n}", n) for n in range(3)]
    before = harness.state("gcpod1", pods[1][1])
    harness.wipe_cache()
    for number in (0, 2):
        subprocess.run(["ip", "netns", "del", os.path.basename(pods[number][0])], check=True)
    harness.run(plugin_dir, "gc", caps=["gcpod1"])
    for number in (0, 2):
        assert harness.state(f"gcpod{number}", pods[number][1]) == []
    assert harness.state("gcpod1", pods[1][1]) == before


def test_del_without_cache_or_netns_leaves_nothing(plugin_dir, harness):
    # The pod's netns went first (a node reboot, a crashed runtime): no addresses to read.
    pod, address = harness.add(plugin_dir, "gcpod0", 0)
    harness.wipe_cache()
    subprocess.run(["ip", "netns", "del", os.path.basename(pod)], check=True)
    harness.run(plugin_dir, "del", "gcpod0", pod)
    assert harness.state("gcpod0", address) == []
    assert harness.host_leftovers() == []
