"""A Kubernetes-like network list run through libcni's list functions
(libcni.runtime.netlist.Runtime), the way containerd runs it: bridge + host-local, portmap,
bandwidth, tuning, firewall.

The runtime runs inside a test "host" netns (see l3node.Node); pods are further namespaces.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, ip_json, ns_exec
from l3node import EXTERNAL_HOST_SIDE, Node
from test_bandwidth import CLIENT as RATE_CLIENT
from test_bandwidth import SERVER as RATE_SERVER
from test_portmap import CLIENT, SERVER

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
        argv = [
            sys.executable,
            "-c",
            DRIVER,
            REPO,
            plugin_dir,
            self.list_path,
            self.cache,
            verb,
            cid,
            pod,
            json.dumps(caps or {}),
        ]
        proc = subprocess.run(
            ["ip", "netns", "exec", os.path.basename(self.node.host), *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (verb, proc.stdout, proc.stderr[-3000:])
        return json.loads(proc.stdout) if verb == "add" else None

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


@pytest.fixture
def cluster(make_netns, tmp_path):
    return Cluster(make_netns, tmp_path)


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


def background(netns, *argv):
    proc = subprocess.Popen(
        ["ip", "netns", "exec", os.path.basename(netns), sys.executable, "-c", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def ask(netns, host, port):
    return ns_exec(netns, sys.executable, "-c", CLIENT, "tcp", host, str(port)).strip()


def rate(server_ns, listen, client_ns, direction):
    mode = "send" if direction == "ingress" else "recv"
    server = background(server_ns, RATE_SERVER, listen, mode, "2")
    try:
        out = ns_exec(
            client_ns,
            sys.executable,
            "-c",
            RATE_CLIENT,
            listen,
            "recv" if mode == "send" else "send",
            "2",
        )
        return float(out.strip())
    finally:
        server.kill()
        server.wait()


def test_pod_on_the_full_chain(plugin_dir, cluster):
    node = cluster.node
    pod, other = node.pod(), node.pod()
    result = cluster.run(plugin_dir, "add", "pod1", pod, caps())
    cluster.run(plugin_dir, "add", "pod2", other, caps(host_port=False, bandwidth=False))
    address = result["ips"][0]["address"].split("/")[0]
    assert [i["name"] for i in result["interfaces"]][0] == "cbr0"
    assert result["interfaces"][-1]["name"].startswith("bwp")
    assert ns_exec(pod, "cat", "/proc/sys/net/core/somaxconn").strip() == "1024"
    assert ip_json(pod, "link", "show", "eth0")[0]["mtu"] == 1400
    cluster.run(plugin_dir, "check", "pod1", pod, caps())
    server = background(pod, SERVER)
    try:
        # The host port from outside the node, from the node, and from another pod.
        assert ask(node.external, EXTERNAL_HOST_SIDE, 30080).startswith("tcp from")
        assert ask(node.host, EXTERNAL_HOST_SIDE, 30080).startswith("tcp from")
        assert ask(other, f"{SUBNET}.1", 30080).startswith("tcp from")
    finally:
        server.kill()
        server.wait()
    time.sleep(0.2)
    # A server on the node: sending is the pod's ingress, receiving its egress.
    ingress = rate(node.host, f"{SUBNET}.1", pod, "ingress")
    egress = rate(node.host, f"{SUBNET}.1", pod, "egress")
    assert 0.3 * RATE <= ingress <= 1.35 * RATE, ingress
    assert 0.3 * RATE <= egress <= 1.35 * RATE, egress
    cluster.run(plugin_dir, "del", "pod1", pod, caps())
    cluster.run(plugin_dir, "del", "pod2", other)
    assert cluster.leftovers("pod1", address) == []


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_chain_added_by_one_deleted_by_the_other(plugin_dir, go_bin, cluster, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    pod = cluster.node.pod()
    result = cluster.run(dirs[adder], "add", "pod1", pod, caps())
    address = result["ips"][0]["address"].split("/")[0]
    cluster.run(dirs[deleter], "del", "pod1", pod, caps())
    # Go's firewall does not know our per-attachment record: it stays until a GC (which then
    # finds its rules gone) or a DEL of ours.
    record = os.path.join(cluster.firewall_dir, "k8s-pod-network", "pod1_eth0.json")
    assert cluster.leftovers("pod1", address) == ([record] if deleter == "go" else [])
