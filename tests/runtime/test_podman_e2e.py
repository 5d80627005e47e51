"""A real client: Debian's podman 4.3 (CNI backend) running containers on a plugin directory,
inside a test-owned node netns (tests/kit/podman/node.py). Every check runs against our frozen
plugins and against Debian's Go plugins, so the suite itself is known to be honest.
"""

import json
import os
import shutil
import subprocess

import pytest
from conftest import FROZEN_BIN, GO_BIN, REPO
from kit import require
from kit.dhcpnode import wait_for
from kit.podman.dhcplan import dhcp_lan, leased, veth_to_external
from kit.podman.node import EXTERNAL_ADDRESS, NODE_ADDRESS, PodmanNode


@pytest.fixture(scope="session")
def deb_bin(frozen_bin, tmp_path_factory):
    """The plugin dir `make deb`'s package installs (/opt/cni/bin), unpacked into a tmp root."""
    import runpy

    out = tmp_path_factory.mktemp("deb")
    build = runpy.run_path(os.path.join(REPO, "build", "deb.py"))["build"]
    deb = build(frozen_bin, str(out), "gzip", str(out / "work"))
    subprocess.run(["dpkg-deb", "-x", deb, str(out / "root")], check=True)
    return str(out / "root" / "opt" / "cni" / "bin")


@pytest.fixture(params=["go", "pycni", "deb"])
def node(request, make_netns):
    require(
        shutil.which("podman"), "podman is not installed (Debian packages podman, crun, conmon)"
    )
    dirs = {"go": GO_BIN, "pycni": FROZEN_BIN}
    plugin_dir = dirs.get(request.param) or request.getfixturevalue("deb_bin")
    if not os.path.isfile(os.path.join(plugin_dir, "bridge")):
        pytest.fail(f"no plugins in {plugin_dir} (make build; Debian containernetworking-plugins)")
    podman = PodmanNode(make_netns, plugin_dir)
    yield podman
    podman.close()


def fetch(netns: str, url: str) -> str:
    """An HTTP GET from a test netns (not the node): the body, or "" when unreachable."""
    code = (
        "import sys, urllib.request\ntry:\n print(urllib.request.urlopen(sys.argv[1], "
        "timeout=3).read().decode().strip())\nexcept Exception:\n print('')"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", os.path.basename(netns), "python3", "-c", code, url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.strip()


def wget(node, container: str, url: str) -> str:
    # busybox's static wget can crash on its own -T timeout: wrap it in `timeout` instead.
    return node.exec(container, "timeout", "5", "wget", "-q", "-O", "-", url).stdout.strip()


def pings(node, container: str, address: str) -> bool:
    return node.exec(container, "ping", "-c", "1", "-W", "2", address).returncode == 0


def listener(netns: str):
    """A TCP listener in a test netns that answers with the peer address it saw."""
    code = (
        "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
        "socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 9000)); s.listen(4); print('ready', "
        "flush=True)\nwhile True:\n c, peer = s.accept(); c.sendall(peer[0].encode() + "
        "b'\\n'); c.close()"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", os.path.basename(netns), "python3", "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def leftovers(node, container_id: str, address: str) -> list:
    found = []
    for tool in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        out = node.sh(*tool, check=False).stdout
        found += [
            line
            for line in out.splitlines()
            if container_id in line or f"{address}/" in line or f"{address}:" in line
        ]
    links = json.loads(node.sh("ip", "-j", "link", "show").stdout)
    found += [link["ifname"] for link in links if link["ifname"].startswith(("veth", "bwp"))]
    listing = node.sh("sh", "-c", "ls /var/lib/cni/networks/*/ 2>/dev/null", check=False).stdout
    found += [name for name in listing.split() if name[0].isdigit()]
    return found


def test_containers_reach_each_other_the_gateway_and_outside_masqueraded(node):
    node.podman("network", "create", "--subnet", "10.89.1.0/24", "net1")
    node.run_container("c1", "--network", "net1")
    node.run_container("c2", "--network", "net1")
    first, second = node.inspect_ip("c1", "net1"), node.inspect_ip("c2", "net1")
    assert first.startswith("10.89.1.") and second.startswith("10.89.1.") and first != second
    assert pings(node, "c1", second) and pings(node, "c2", first)
    assert pings(node, "c1", "10.89.1.1")
    seen = listener(node.external)
    try:
        # The external netns has no route to 10.89.1.0/24: only masqueraded traffic comes back.
        answer = node.exec("c1", "timeout", "5", "nc", EXTERNAL_ADDRESS, "9000").stdout.strip()
    finally:
        seen.kill()
        seen.wait()
    assert answer == NODE_ADDRESS


def test_published_ports(node):
    node.podman("network", "create", "--subnet", "10.89.2.0/24", "net2")
    node.run_container("web", "--network", "net2", "-p", "18080:80", "-p", "127.0.0.1:18082:80")
    node.run_container("client", "--network", "net2")
    url = f"http://{NODE_ADDRESS}:18080/"
    assert fetch(node.external, url) == "pod"  # from outside the node
    assert (
        node.sh(
            "python3",
            "-c",
            "import urllib.request as u; print(u.urlopen("
            "'http://127.0.0.1:18080/', timeout=3).read().decode().strip())",
        ).stdout.strip()
        == "pod"
    )
    assert wget(node, "client", "http://10.89.2.1:18080/") == "pod"  # from another container
    assert wget(node, "web", "http://10.89.2.1:18080/") == "pod"  # hairpin to itself
    local = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:18082/').read())"
    assert "pod" in node.sh("python3", "-c", local).stdout
    assert fetch(node.external, f"http://{NODE_ADDRESS}:18082/") == ""  # bound to 127.0.0.1


def test_published_udp_port(node):
    node.podman("network", "create", "--subnet", "10.89.13.0/24", "udpnet")
    node.run_container(
        "echo", "--network", "udpnet", "-p", "15353:5353/udp", command=("udpecho", "5353")
    )
    code = (
        "import socket, sys\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "u.settimeout(3)\nu.sendto(b'hi', (sys.argv[1], 15353))\n"
        "print(u.recvfrom(100)[0].decode())"
    )
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            os.path.basename(node.external),
            "python3",
            "-c",
            code,
            NODE_ADDRESS,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.stdout.strip() == f"udp from {EXTERNAL_ADDRESS}", proc.stderr


def test_subnet_gateway_range_static_ip_and_mac(node):
    node.podman(
        "network",
        "create",
        "--subnet",
        "10.89.3.0/24",
        "--gateway",
        "10.89.3.254",
        "--ip-range",
        "10.89.3.128/25",
        "net3",
    )
    node.run_container("ranged", "--network", "net3")
    assert int(node.inspect_ip("ranged", "net3").split(".")[-1]) >= 128
    node.run_container(
        "fixed", "--network", "net3", "--ip", "10.89.3.200", "--mac-address", "0a:58:0a:59:03:14"
    )
    shown = node.exec("fixed", "ip", "addr", "show", "eth0").stdout
    assert "10.89.3.200/24" in shown and "0a:58:0a:59:03:14" in shown
    assert pings(node, "fixed", "10.89.3.254")


def test_connect_disconnect_stop_start_and_reload(node):
    node.podman("network", "create", "--subnet", "10.89.4.0/24", "net4a")
    node.podman("network", "create", "--subnet", "10.89.5.0/24", "net4b")
    node.run_container("c", "--network", "net4a", "-p", "18084:80")
    node.podman("network", "connect", "net4b", "c")
    assert "10.89.5." in node.exec("c", "ip", "addr").stdout
    node.podman("network", "disconnect", "net4b", "c")
    assert "10.89.5." not in node.exec("c", "ip", "addr").stdout
    node.podman("stop", "-t", "0", "c")
    node.podman("start", "c")
    assert fetch(node.external, f"http://{NODE_ADDRESS}:18084/") == "pod"
    node.sh("iptables", "-t", "nat", "-F")
    assert fetch(node.external, f"http://{NODE_ADDRESS}:18084/") == ""
    node.podman("network", "reload", "c")
    assert fetch(node.external, f"http://{NODE_ADDRESS}:18084/") == "pod"


def test_internal_network_is_not_masqueraded(node):
    node.podman("network", "create", "--internal", "--subnet", "10.89.6.0/24", "inner")
    node.run_container("c", "--network", "inner")
    assert not pings(node, "c", EXTERNAL_ADDRESS)
    nat = node.sh("iptables-save", "-t", "nat").stdout
    assert "10.89.6." not in nat


def test_dual_stack(node):
    node.podman(
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.89.10.0/24",
        "--subnet",
        "fd89:10::/64",
        "dual",
    )
    node.run_container("a", "--network", "dual")
    node.run_container("b", "--network", "dual")
    shown = node.exec("b", "ip", "addr", "show", "eth0").stdout
    v6 = next(w.split("/")[0] for w in shown.split() if w.startswith("fd89:10::"))
    ok = any(node.exec("a", "ping", "-c", "1", "-W", "2", v6).returncode == 0 for _ in range(4))
    assert ok


def test_macvlan_network_on_a_veth_parent(node):
    veth_to_external(node, "mvparent", "mvpeer", "192.168.220.2/24")
    create = "network create -d macvlan -o parent=mvparent --subnet 192.168.220.0/24 mvnet"
    node.podman(*create.split())
    node.run_container("m", "--network", "mvnet")
    # Reaching the far end of mvparent from 192.168.220.0/24 needs a link on mvparent itself:
    # there is no bridge or route on the node for that subnet.
    assert node.inspect_ip("m", "mvnet").startswith("192.168.220.")
    assert "192.168.220." not in node.sh("ip", "route").stdout
    assert pings(node, "m", "192.168.220.2")


def test_macvlan_network_with_dhcp_ipam(node, tmp_path):
    """`--ipam-driver dhcp`: the plugin directory's dhcp daemon runs in the node (its default
    socket lives in the node's private /run/cni or /run/pycni), dnsmasq in the external netns."""
    with dhcp_lan(node, str(tmp_path), "192.168.221.") as leases:
        create = "network create -d macvlan -o parent=dhparent --ipam-driver dhcp dhnet"
        node.podman(*create.split())
        node.run_container("d", "--network", "dhnet")
        address = node.inspect_ip("d", "dhnet")
        assert address.startswith("192.168.221.")
        assert pings(node, "d", "192.168.221.1")
        assert address in leased(leases)
        node.podman("rm", "-f", "-t", "0", "d")
        wait_for(
            lambda: address not in leased(leases),
            timeout=5,
            what=f"{address} released after podman rm",
        )


def test_mtu_option(node):
    node.podman("network", "create", "-o", "mtu=1400", "--subnet", "10.89.11.0/24", "small")
    node.run_container("c", "--network", "small")
    assert "mtu 1400" in node.exec("c", "ip", "link", "show", "eth0").stdout


def test_rm_leaves_no_veth_reservation_or_rule(node):
    node.podman("network", "create", "--subnet", "10.89.12.0/24", "gone")
    container_id = node.run_container("c", "--network", "gone", "-p", "18090:80")
    address = node.inspect_ip("c", "gone")
    assert leftovers(node, container_id, address) != []
    node.podman("rm", "-f", "-t", "0", "c")
    assert leftovers(node, container_id, address) == []
