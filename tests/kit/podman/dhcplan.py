"""A DHCP lan for a podman node's macvlan networks: veth `dhparent` (the node, the macvlan
parent) to `dhpeer` (the external netns) with dnsmasq serving on `dhpeer`, and the plugin
directory's dhcp daemon on its default socket inside the node. Both are stopped by PID."""

import contextlib
import os
import subprocess

from kit.dhcpnode import DNSMASQ, require_dnsmasq, wait_for
from kit.plugins import GO_BIN


def veth_to_external(node, parent: str, peer: str, *addresses: str) -> None:
    """A veth from the node (`parent`, up, no address: a macvlan parent) to the external netns
    (`peer`, up, with `addresses`)."""
    node_ns, ext = os.path.basename(node.node), os.path.basename(node.external)

    def ip(*argv):
        subprocess.run(["ip", *argv], check=True)

    ip("-n", node_ns, "link", "add", parent, "type", "veth", "peer", peer, "netns", ext)
    ip("-n", node_ns, "link", "set", parent, "up")
    for address in addresses:
        ip("-n", ext, "addr", "add", address, "dev", peer, *(["nodad"] if ":" in address else []))
    ip("-n", ext, "link", "set", peer, "up")


@contextlib.contextmanager
def dhcp_lan(node, workdir, v4: str, v6: str | None = None):
    """Leases from `v4`10-99 (a /24 prefix like "192.168.221.", router `v4`1) and, with `v6`
    (like "fd31::"), from `v6`10-99 in a /64 with Router Advertisements. Yields the path of
    dnsmasq's lease file."""
    require_dnsmasq()
    veth_to_external(node, "dhparent", "dhpeer", f"{v4}1/24", *([f"{v6}1/64"] if v6 else []))
    ext = os.path.basename(node.external)
    leases = os.path.join(workdir, "leases")
    dhcp6 = [f"--dhcp-range={v6}10,{v6}99,64,2m", "--enable-ra"] if v6 else []
    dnsmasq = subprocess.Popen(
        [
            *("ip", "netns", "exec", ext, DNSMASQ, "-k", "--conf-file=/dev/null", "--port=0"),
            *("--user=root", "--group=root", "--bind-interfaces", "--interface=dhpeer"),
            "--no-ping",
            f"--pid-file={os.path.join(workdir, 'dnsmasq.pid')}",
            f"--dhcp-leasefile={leases}",
            f"--dhcp-range={v4}10,{v4}99,255.255.255.0,2m",
            f"--dhcp-option=option:router,{v4}1",
            *dhcp6,
        ],
        stderr=subprocess.DEVNULL,
    )
    daemon = node.spawn(
        os.path.join(node.plugin_dir, "dhcp"),
        "daemon",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Each daemon's default socket: Go's /run/cni/dhcp.sock, ours /run/pycni/dhcp.sock.
    socket_path = "/run/cni/dhcp.sock" if node.plugin_dir == GO_BIN else "/run/pycni/dhcp.sock"
    try:
        wait_for(
            lambda: node.sh("test", "-S", socket_path, check=False).returncode == 0,
            timeout=30,
            what=f"the dhcp daemon's socket {socket_path} in the node",
        )
        yield leases
    finally:
        for proc in (daemon, dnsmasq):
            proc.kill()
            proc.wait()


def leased(leases: str) -> str:
    """dnsmasq's lease file as it stands."""
    with open(leases) as f:
        return f.read()
