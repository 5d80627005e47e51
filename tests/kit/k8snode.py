"""A Kubernetes-like node: a network list (bridge + host-local, portmap, bandwidth, tuning,
firewall) run through libcni's list functions (libcni.runtime.netlist.Runtime) from inside a
test "host" netns, the way containerd runs it; pods are further namespaces. `leftovers` lists
everything per pod a DEL must remove.
"""

import json
import os
import subprocess
import sys

from kit.l3node import Node
from kit.netns import ip_json, ns_exec
from kit.plugins import REPO

SUBNET = "10.97.0"
RATE = 8_000_000

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from libcni.runtime import conflist, netlist
plugin_dir, list_path, cache_dir, verb, cid, netns, caps = sys.argv[2:9]
runtime = netlist.Runtime([plugin_dir], cache_dir=cache_dir)
network = conflist.list_from_file(list_path)
rt = netlist.RuntimeConf(container_id=cid, netns=netns, ifname="eth0",
                         args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", cid)],
                         capability_args=json.loads(caps))
try:
    if verb == "add":
        print(json.dumps(runtime.add(network, rt).to_version("1.0.0")))
    elif verb == "check":
        runtime.check(network, rt)
    else:
        runtime.delete(network, rt)
except Exception as err:
    print(json.dumps({"error": str(err)}))
    sys.exit(1)
"""


def driver_argv(host, plugin_dir, list_path, cache, verb, cid, pod, caps, driver=DRIVER) -> list:
    """The command line running `driver`'s `verb` of one attachment inside the `host` netns
    (a driver program takes the repository, then these arguments, as DRIVER does)."""
    return [
        *("ip", "netns", "exec", os.path.basename(host)),
        *(sys.executable, "-c", driver, REPO, plugin_dir, list_path, cache),
        *(verb, cid, pod, json.dumps(caps)),
    ]


def run_driver(argv: list, verb: str):
    """Run a driver command line (driver_argv); ADD's result, None for the other verbs."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (verb, proc.stdout, proc.stderr[-3000:])
    return json.loads(proc.stdout) if verb == "add" else None


class Cluster:
    def __init__(self, make_netns, tmp_path):
        self.node = Node(make_netns, tmp_path, "bridge")
        self.cache = str(tmp_path / "cache")
        self.list_path = str(tmp_path / "k8s.conflist")
        self.tuning_dir = str(tmp_path / "tuning")
        self.firewall_dir = str(tmp_path / "firewall")
        plugins = [
            {
                "type": "bridge",
                "bridge": "cbr0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": self.node.host_local(f"{SUBNET}.0/24", routes=[{"dst": "0.0.0.0/0"}]),
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {
                "type": "tuning",
                "sysctl": {"net.core.somaxconn": "1024"},
                "dataDir": self.tuning_dir,
                "mtu": 1400,
            },
            {"type": "firewall", "backend": "iptables", "dataDir": self.firewall_dir},
        ]
        with open(self.list_path, "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": plugins}, f)

    def run(self, plugin_dir, verb, cid, pod, caps=None):
        argv = driver_argv(
            self.node.host, plugin_dir, self.list_path, self.cache, verb, cid, pod, caps or {}
        )
        return run_driver(argv, verb)

    def leftovers(self, cid: str, address: str) -> list:
        """Everything per-pod that must be gone after DEL."""
        host = self.node.host
        found = []
        marks = (address, f'id: \\"{cid}\\"', "CNI-DN-")
        for tool in ("iptables-save", "ip6tables-save"):
            found += [
                line
                for line in ns_exec(host, tool).splitlines()
                if any(mark in line for mark in marks)
            ]
        found += [
            line for line in ns_exec(host, "nft", "list", "ruleset").splitlines() if cid in line
        ]
        found += [
            e["ifname"]
            for e in ip_json(host, "link", "show")
            if e["ifname"].startswith(("bwp", "veth"))
        ]
        found += [
            q["kind"]
            for q in json.loads(ns_exec(host, "tc", "-j", "qdisc", "show"))
            if q["kind"] in ("tbf", "ingress")
        ]
        for folder in (self.tuning_dir, self.firewall_dir):
            for root, _, files in os.walk(folder):
                found += [os.path.join(root, f) for f in files]
        found += self.node.reservations("k8s-pod-network")
        return found


def caps(host_port=True, bandwidth=True):
    out: dict = {}
    if host_port:
        out["portMappings"] = [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]
    if bandwidth:
        out["bandwidth"] = {
            "ingressRate": RATE,
            "ingressBurst": 400_000,
            "egressRate": RATE,
            "egressBurst": 400_000,
        }
    return out
