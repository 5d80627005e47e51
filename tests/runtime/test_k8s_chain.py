"""A Kubernetes-like network list run through libcni's list functions
(libcni.runtime.netlist.Runtime), the way containerd runs it: bridge + host-local, portmap,
bandwidth, tuning, firewall.

The runtime runs inside a test "host" netns (see l3node.Node); pods are further namespaces.
"""

import os
import subprocess
import sys
import time

import pytest
from conftest import ip_json, ns_exec
from kit.k8snode import RATE, SUBNET, Cluster, caps
from kit.l3node import EXTERNAL_HOST_SIDE
from kit.traffic import PORT_CLIENT as CLIENT
from kit.traffic import PORT_SERVER as SERVER
from kit.traffic import RATE_CLIENT, RATE_SERVER


@pytest.fixture
def cluster(make_netns, tmp_path):
    return Cluster(make_netns, tmp_path)


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
