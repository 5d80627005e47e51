"""The kubelet's path: Debian's containerd 1.6 CRI plugin runs pod sandboxes on a plugin
directory (tests/kit/cri/node.py), driven over CRI v1 (tests/kit/cri/client.py) the way the kubelet
does: RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox. Every case runs on our
frozen plugins and on Debian's Go plugins (1.1.1) with the same conflists, so the checks are
known to be honest; where Go 1.1.1 is known to be wrong the Go case is a strict xfail.

One containerd boot per plugin directory per session; every test switches the node's conflist,
uses its own subnet and leaves no pod behind.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import NetnsFactory
from kit import require
from kit.cri.client import TCP, UDP
from kit.cri.node import (
    LAN_PREFIX,
    OUTSIDE_ADDRESS,
    CriNode,
    Lan,
    build_pod_image,
    kubernetes_conflist,
)

NODE_ADDRESS = f"{LAN_PREFIX}.1"
BANDWIDTH = {"kubernetes.io/ingress-bandwidth": "1M", "kubernetes.io/egress-bandwidth": "1M"}

# An HTTP server for the LAN's outside host that answers with the peer address it saw.
PEER_SERVER = r"""
import http.server, sys
class Peer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode() + b"\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", 9000), Peer)
print("ready", flush=True)
server.serve_forever()
"""


class Pool:
    """Session-wide: one pod image, and per plugin directory one CriNode on its own LAN."""

    def __init__(self, tmp_path_factory):
        self.namespaces = NetnsFactory()
        work = str(tmp_path_factory.mktemp("cri-image"))
        self.image = build_pod_image(os.path.join(work, "pod.tar"), work)
        self.nodes: dict = {}
        self.servers: list = []
        self.cannot_run: str | None = None

    def lan(self) -> Lan:
        lan = Lan(self.namespaces)
        server = subprocess.Popen(
            ["ip", "netns", "exec", lan.name, sys.executable, "-c", PEER_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(server)
        assert server.stdout.readline().strip() == "ready"
        return lan

    def node(self, plugin_dir: str) -> CriNode:
        if plugin_dir not in self.nodes:
            self.nodes[plugin_dir] = CriNode(
                self.namespaces, plugin_dir, self.lan(), NODE_ADDRESS, self.image
            )
            if self.cannot_run is None:
                self.cannot_run = self.probe(self.nodes[plugin_dir])
        require(
            not self.cannot_run,
            f"this machine cannot run containers under containerd/runc: {self.cannot_run}",
        )
        return self.nodes[plugin_dir]

    @staticmethod
    def probe(node: CriNode) -> str:
        """ "" if a host-network pod (no CNI involved) runs here, else why it does not."""
        try:
            node.remove_pod(node.run_pod("probe", host_network=True))
            return ""
        except Exception as err:
            return str(err)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        for server in self.servers:
            server.kill()
            server.wait()
        self.namespaces.cleanup()


@pytest.fixture(scope="session")
def cri_pool(tmp_path_factory):
    require(
        shutil.which("containerd") and shutil.which("runc"),
        "containerd and runc are not installed (Debian packages containerd, runc)",
    )
    pool = Pool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(params=["pycni", "go"])
def node(request, cri_pool):
    plugin_dir = request.getfixturevalue("frozen_bin" if request.param == "pycni" else "go_bin")
    cri_node = cri_pool.node(plugin_dir)
    cri_node.impl = request.param
    yield cri_node
    cri_node.remove_all_pods()


def known_go_bug(request, node, reason: str) -> None:
    """Mark this case a strict xfail when it runs on Go's plugins."""
    if node.impl == "go":
        request.applymarker(pytest.mark.xfail(reason=f"Go 1.1.1: {reason}", strict=True))


# -- checks ------------------------------------------------------------------------------------


def curl(node, url: str, netns=None) -> str:
    proc = node.sh("curl", "-s", "-g", "-m", "3", url, check=False, netns=netns)
    return proc.stdout.strip()


def outside_curl(node, url: str) -> str:
    proc = subprocess.run(
        ["ip", "netns", "exec", node.lan.name, "curl", "-s", "-m", "3", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.strip()


def outside_udp(node, address: str, port: int) -> str:
    code = (
        "import socket, sys\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "u.settimeout(3)\nu.sendto(b'hi', (sys.argv[1], int(sys.argv[2])))\n"
        "print(u.recvfrom(100)[0].decode())"
    )
    argv = ["ip", "netns", "exec", node.lan.name, sys.executable, "-c", code, address, str(port)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def peer_of(answer: str) -> str:
    """busybox httpd's REMOTE_ADDR ("[::ffff:10.1.2.3]") as a plain address."""
    return answer.strip("[]").removeprefix("::ffff:")


def pod_addresses(node, netns: str, ifname: str = "eth0") -> list:
    links = json.loads(node.sh("ip", "-j", "addr", "show", ifname, netns=netns).stdout)
    return [a["local"] for a in links[0]["addr_info"] if a.get("scope") == "global"]


def check_pod_network(node, sandbox_id: str, subnet: str, gateway: str) -> str:
    """Pod IP reported and on eth0, lo up, default route via the gateway. Returns the IP."""
    ip = node.pod_ip(sandbox_id)
    assert ip.startswith(subnet), (ip, subnet)
    netns = node.pod_netns(sandbox_id)
    assert ip in pod_addresses(node, netns)
    lo = json.loads(node.sh("ip", "-j", "link", "show", "lo", netns=netns).stdout)[0]
    assert "UP" in lo["flags"]
    routes = json.loads(node.sh("ip", "-j", "route", "show", netns=netns).stdout)
    assert {"dst": "default", "gateway": gateway} in [
        {"dst": r["dst"], "gateway": r.get("gateway")} for r in routes
    ], routes
    return ip


def mentions(line: str, ip: str) -> bool:
    return re.search(rf"(?<![\w.:]){re.escape(ip)}(?![\w:]|\.\d)", line) is not None


def leftovers(node, pods: dict) -> list:
    """Everything on the node that mentions one of `pods` (sandbox id -> pod IP), plus any pod
    veth, bandwidth ifb or tbf qdisc (call it once the node runs no pod)."""
    found = []
    for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        for line in node.sh(*tool, check=False).stdout.splitlines():
            if any(sid in line or (ip and mentions(line, ip)) for sid, ip in pods.items()):
                found.append(f"{tool[0]}: {line}")
    links = json.loads(node.sh("ip", "-j", "link", "show").stdout)
    found += [
        f"link {link['ifname']}" for link in links if link["ifname"].startswith(("veth", "bwp"))
    ]
    found += [
        f"qdisc {line}"
        for line in node.sh("tc", "qdisc", "show").stdout.splitlines()
        if "tbf" in line
    ]
    for top in (node.host_local_dir, "/var/lib/cni", "/run/cni"):
        listing = node.sh(
            "sh", "-c", f"cd {top} 2>/dev/null && ls -R .", check=False
        ).stdout.split()
        found += [
            f"{top}/{name}"
            for name in listing
            if any(sid in name or (ip and ip in name) for sid, ip in pods.items())
        ]
        if pods:
            pattern = "|".join(pods)
            contents = node.sh(
                "sh", "-c", f"cd {top} 2>/dev/null && grep -rlE '{pattern}' .", check=False
            ).stdout.split()
            found += [f"{top}/{name} (content)" for name in contents]
    return sorted(set(found))


# Netfilter lines that only say a table or built-in chain exists (a DEL that merely looks at an
# unused table instantiates it empty): not state of any pod.
SCAFFOLDING = re.compile(
    r"^(#|\*|COMMIT|:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) |table \S+ \S+ \{$|"
    r"chain (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) \{$|type \w+ hook \w+ .*;$|\}$)"
)


def node_state(node) -> set:
    """Every netfilter rule and user chain (counters dropped), link, qdisc and CNI state file
    of the node."""
    state = set()
    for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        for line in node.sh(*tool).stdout.splitlines():
            line = re.sub(r"\[\d+:\d+\]|packets \d+ bytes \d+", "", line).strip()
            if line and not SCAFFOLDING.match(line):
                state.add(f"{tool[0]}: {line}")
    state |= {f"link {link['ifname']}" for link in json.loads(node.sh("ip", "-j", "link").stdout)}
    state |= {f"qdisc {line}" for line in node.sh("tc", "qdisc", "show").stdout.splitlines()}
    for top in (node.host_local_dir, "/var/lib/cni", "/run/cni"):
        listing = node.sh("sh", "-c", f"cd {top} 2>/dev/null && find .", check=False).stdout
        state |= {f"{top}/{name}" for name in listing.split()}
    return state


def assert_state_settles(node, expected: set, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (now := node_state(node)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert now == expected, (sorted(now - expected), sorted(expected - now))


def remove_and_check(node, pods: dict) -> None:
    """Stop + Remove every pod, then nothing may mention them."""
    for sandbox_id in pods:
        node.remove_pod(sandbox_id)
    assert_nothing_left(node, pods)


def assert_nothing_left(node, pods: dict, timeout: float = 5) -> None:
    # The kernel destroys a pod's netns (and its veth) asynchronously: allow it a moment.
    deadline = time.monotonic() + timeout
    while (left := leftovers(node, pods)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], "\n".join(left)


# -- conflists ---------------------------------------------------------------------------------


def bridge_list(node, name: str, *ranges, bridge="cni0", **extra) -> dict:
    routes = [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if any(":" in r for r in ranges) else [])
    plugin = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "ipam": node.host_local(*ranges, routes=routes),
        **extra,
    }
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


# -- the cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_kubernetes_list_ports_bandwidth_and_teardown(node, version):
    subnet = "10.244.40" if version == "0.4.0" else "10.244.41"
    node.set_conflist(kubernetes_conflist(node, version, subnet))
    ports = [(TCP, 80, 18080, ""), (UDP, 5353, 15353, ""), (TCP, 80, 18082, "127.0.0.1")]
    web = node.run_pod("web", ports=ports, annotations=BANDWIDTH)
    ip = check_pod_network(node, web, subnet, f"{subnet}.1")
    web_netns = node.pod_netns(web)
    assert curl(node, f"http://{ip}/") == "pod"  # the node reaches the pod directly
    assert outside_curl(node, f"http://{NODE_ADDRESS}:18080/") == "pod"
    # The outside host is not NATed on its way in: the pod sees its own address.
    assert peer_of(outside_curl(node, f"http://{NODE_ADDRESS}:18080/cgi-bin/peer")) == (
        OUTSIDE_ADDRESS
    )
    assert outside_udp(node, NODE_ADDRESS, 15353) == f"udp from {OUTSIDE_ADDRESS}"
    assert curl(node, f"http://{NODE_ADDRESS}:18080/") == "pod"  # from the node
    assert curl(node, "http://127.0.0.1:18080/") == "pod"  # the node's loopback
    assert curl(node, f"http://{NODE_ADDRESS}:18080/", netns=web_netns) == "pod"  # hairpin
    assert curl(node, "http://127.0.0.1:18082/") == "pod"  # bound to its hostIP...
    assert outside_curl(node, f"http://{NODE_ADDRESS}:18082/") == ""  # ...and only there
    # pod -> outside is masqueraded behind the node's address.
    assert curl(node, f"http://{OUTSIDE_ADDRESS}:9000/", netns=web_netns) == NODE_ADDRESS
    # bandwidth: 1M (bits/s) each way, a tbf on the host veth and on the pod's ifb.
    qdiscs = [line for line in node.sh("tc", "qdisc", "show").stdout.splitlines() if "tbf" in line]
    assert len(qdiscs) == 2 and all("rate 1Mbit" in line for line in qdiscs), qdiscs
    assert leftovers(node, {web: ip}) != []  # the check below can see what a pod leaves
    remove_and_check(node, {web: ip})


def test_ptp(node):
    plugin = {
        "type": "ptp",
        "ipMasq": True,
        "ipam": node.host_local("10.244.50.0/24", routes=[{"dst": "0.0.0.0/0"}]),
    }
    node.set_conflist({"cniVersion": "1.0.0", "name": "ptp", "plugins": [plugin]})
    pod = node.run_pod("p2p")
    ip = node.pod_ip(pod)
    netns = node.pod_netns(pod)
    assert ip.startswith("10.244.50.") and ip in pod_addresses(node, netns)
    assert curl(node, f"http://{ip}/") == "pod"
    assert curl(node, f"http://{OUTSIDE_ADDRESS}:9000/", netns=netns) == NODE_ADDRESS
    remove_and_check(node, {pod: ip})


def macvlan_parent(node) -> str:
    """A veth `mvparent` on the node whose peer in the LAN netns holds 192.168.220.254/24."""
    links = json.loads(node.sh("ip", "-j", "link", "show").stdout)
    if "mvparent" not in [link["ifname"] for link in links]:
        run = lambda *argv: subprocess.run(["ip", *argv], check=True)  # noqa: E731
        run(
            "-n",
            node.name,
            "link",
            "add",
            "mvparent",
            "type",
            "veth",
            "peer",
            "mvpeer",
            "netns",
            node.lan.name,
        )
        run("-n", node.name, "link", "set", "mvparent", "up")
        run("-n", node.lan.name, "addr", "add", "192.168.220.254/24", "dev", "mvpeer")
        run("-n", node.lan.name, "link", "set", "mvpeer", "up")
    return "mvparent"


def test_macvlan(node):
    plugin = {
        "type": "macvlan",
        "master": macvlan_parent(node),
        "mode": "bridge",
        "ipam": node.host_local(
            {
                "subnet": "192.168.220.0/24",
                "rangeStart": "192.168.220.10",
                "rangeEnd": "192.168.220.50",
            }
        ),
    }
    node.set_conflist({"cniVersion": "1.0.0", "name": "mvnet", "plugins": [plugin]})
    pod = node.run_pod("mv")
    ip = node.pod_ip(pod)
    netns = node.pod_netns(pod)
    assert ip.startswith("192.168.220.") and ip in pod_addresses(node, netns)
    # The far end of the parent sees the pod's own address: no bridge, no NAT.
    assert curl(node, "http://192.168.220.254:9000/", netns=netns) == ip
    remove_and_check(node, {pod: ip})


def test_dual_stack(node):
    node.set_conflist(
        bridge_list(node, "dual", "10.244.60.0/24", "fd10:244:60::/64", bridge="cnid")
    )
    first, second = node.run_pod("dual-a"), node.run_pod("dual-b")
    status = node.client.pod_sandbox_status(first)["status"]["network"]
    assert status["ip"].startswith("10.244.60.")
    v6 = [extra["ip"] for extra in status["additional_ips"]]
    assert len(v6) == 1 and v6[0].startswith("fd10:244:60::"), status
    netns = node.pod_netns(first)
    assert sorted(pod_addresses(node, netns)) == sorted([status["ip"], v6[0]])
    routes = node.sh("ip", "-6", "route", "show", netns=netns).stdout
    assert "default via fd10:244:60::1" in routes, routes
    other = node.pod_netns(second)
    deadline = time.monotonic() + 10  # until DAD has finished on both ends
    while curl(node, f"http://[{v6[0]}]/", netns=other) != "pod" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert curl(node, f"http://[{v6[0]}]/", netns=other) == "pod"
    pods = {first: status["ip"], second: node.pod_ip(second)}
    remove_and_check(node, pods)
    assert leftovers(node, {first: v6[0]}) == []


def test_exhausted_range_failed_add_leaves_nothing(node):
    ipam = node.host_local(
        {"subnet": "10.244.70.0/24", "rangeStart": "10.244.70.10", "rangeEnd": "10.244.70.10"}
    )
    conflist = kubernetes_conflist(node, "1.0.0", "10.244.70")
    conflist["plugins"][0]["ipam"] = ipam
    conflist["name"] = "tiny"
    node.set_conflist(conflist)
    only = node.run_pod("only", ports=[(TCP, 80, 18090, "")], annotations=BANDWIDTH)
    assert node.pod_ip(only) == "10.244.70.10"
    before = node_state(node)
    with pytest.raises(Exception, match="no IP addresses available in range set"):
        node.run_pod("extra", ports=[(TCP, 80, 18091, "")], annotations=BANDWIDTH)
    assert [p["metadata"]["name"] for p in node.client.list_pod_sandbox()] == ["only"]
    # The failed pod left no rule, link, qdisc, reservation or cache entry of its own.
    assert_state_settles(node, before)
    remove_and_check(node, {only: "10.244.70.10"})


def test_netns_gone_before_stop(node, request):
    known_go_bug(
        request,
        node,
        "bridge DEL with an empty CNI_NETNS releases the IP but skips "
        "the ipMasq teardown (it learns the pod's addresses only from the netns): the "
        "pod's CNI-<hash> masquerade chain stays",
    )
    node.set_conflist(kubernetes_conflist(node, "1.0.0", "10.244.80"))
    pod = node.run_pod("nsgone", ports=[(TCP, 80, 18100, "")], annotations=BANDWIDTH)
    ip = node.pod_ip(pod)
    netns = node.pod_netns(pod)
    node.sh("umount", netns)
    node.sh("rm", "-f", netns)
    remove_and_check(node, {pod: ip})


def test_result_cache_gone_before_stop(node, request):
    known_go_bug(
        request,
        node,
        "firewall DEL without a prevResult removes nothing (its "
        "iptables rules are found only by the prevResult's addresses): the pod's "
        "CNI-FORWARD rules stay",
    )
    node.set_conflist(kubernetes_conflist(node, "1.0.0", "10.244.90"))
    pod = node.run_pod("nocache", ports=[(TCP, 80, 18110, "")], annotations=BANDWIDTH)
    ip = node.pod_ip(pod)
    cached = node.sh("sh", "-c", f"ls /var/lib/cni/results/ | grep {pod}").stdout.split()
    assert cached, "containerd's libcni cached no result"
    node.sh("sh", "-c", "rm -f /var/lib/cni/results/*")
    remove_and_check(node, {pod: ip})


def test_containerd_restart_while_the_pod_runs(node):
    node.set_conflist(kubernetes_conflist(node, "1.0.0", "10.244.100"))
    pod = node.run_pod("survivor", ports=[(TCP, 80, 18120, "")], annotations=BANDWIDTH)
    ip = node.pod_ip(pod)
    node.restart()
    assert node.pod_ip(pod) == ip
    assert outside_curl(node, f"http://{NODE_ADDRESS}:18120/") == "pod"
    remove_and_check(node, {pod: ip})


def test_twenty_pods_at_once(node):
    node.set_conflist(kubernetes_conflist(node, "1.0.0", "10.244.110"))
    with ThreadPoolExecutor(20) as pool:
        pods = list(pool.map(lambda n: node.run_pod(f"many-{n}", annotations=BANDWIDTH), range(20)))
    ips = {pod: node.pod_ip(pod) for pod in pods}
    assert len(set(ips.values())) == 20
    assert all(ip.startswith("10.244.110.") for ip in ips.values())
    for pod, ip in ips.items():
        assert ip in pod_addresses(node, node.pod_netns(pod))
    assert all(curl(node, f"http://{ip}/") == "pod" for ip in ips.values())
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(node.client.stop_pod_sandbox, pods))
        list(pool.map(node.client.remove_pod_sandbox, pods))
    assert_nothing_left(node, ips)


# -- two nodes, one cluster network ------------------------------------------------------------

CLUSTER_CIDR = "10.244.0.0/16"


@pytest.fixture(params=["pycni", "go"])
def cluster(request, cri_pool):
    """Two nodes on one LAN, pod CIDRs 10.244.0.0/24 and 10.244.1.0/24 of CLUSTER_CIDR, each
    routing the other's pod CIDR via its node address (what a flat cluster network does)."""
    plugin_dir = request.getfixturevalue("frozen_bin" if request.param == "pycni" else "go_bin")
    cri_pool.node(plugin_dir)  # skips here if this machine cannot run containers
    lan = cri_pool.lan()
    nodes = []
    try:
        for number in range(2):
            node = CriNode(
                cri_pool.namespaces, plugin_dir, lan, f"{LAN_PREFIX}.{number + 1}", cri_pool.image
            )
            node.impl = request.param
            nodes.append(node)
        for number, node in enumerate(nodes):
            other = 1 - number
            gateway = f"{LAN_PREFIX}.{other + 1}"
            node.sh("ip", "route", "add", f"10.244.{other}.0/24", "via", gateway)
            plugin = {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "ipMasqExclude": [CLUSTER_CIDR],
                "hairpinMode": True,
                "ipam": node.host_local(f"10.244.{number}.0/24", routes=[{"dst": "0.0.0.0/0"}]),
            }
            portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
            node.set_conflist(
                {"cniVersion": "1.0.0", "name": "cluster", "plugins": [plugin, portmap]}
            )
        yield nodes
    finally:
        for node in nodes:
            node.close()


def test_two_nodes_pods_reach_each_other_without_nat(cluster, request):
    near, far = cluster
    known_go_bug(
        request,
        near,
        "bridge has no way to exclude the cluster CIDR from ipMasq: "
        "traffic to the other node's pods leaves masqueraded (the far pod sees the "
        "node's address, not the pod's)",
    )
    near_pod, far_pod = near.run_pod("near"), far.run_pod("far")
    near_ip, far_ip = near.pod_ip(near_pod), far.pod_ip(far_pod)
    assert near_ip.startswith("10.244.0.") and far_ip.startswith("10.244.1.")
    near_ns, far_ns = near.pod_netns(near_pod), far.pod_netns(far_pod)
    # Each pod sees the other's own address as the source: no NAT on the way between nodes.
    assert peer_of(curl(near, f"http://{far_ip}/cgi-bin/peer", netns=near_ns)) == near_ip
    assert peer_of(curl(far, f"http://{near_ip}/cgi-bin/peer", netns=far_ns)) == far_ip
    # The node reaches the remote pod; pod -> outside still leaves behind the node's address.
    assert curl(near, f"http://{far_ip}/") == "pod"
    assert curl(near, f"http://{OUTSIDE_ADDRESS}:9000/", netns=near_ns) == near.address
    assert curl(far, f"http://{OUTSIDE_ADDRESS}:9000/", netns=far_ns) == far.address
    remove_and_check(near, {near_pod: near_ip})
    remove_and_check(far, {far_pod: far_ip})
