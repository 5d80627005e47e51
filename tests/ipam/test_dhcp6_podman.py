"""dhcp through a real runtime: podman 4.3 (CNI backend, tests/podman/node.py) runs a container
on a dual-stack macvlan network with `--ipam-driver dhcp`, on our frozen plugins. podman writes
the conflist; the operator adds `"families": ["ipv4", "ipv6"]` to its ipam section. The dhcp
daemon runs in the node (its socket /run/pycni/dhcp.sock on the node's private tmpfs), dnsmasq
in the external netns serves DHCPv4 and DHCPv6.
"""

import ipaddress
import json
import os
import shutil
import time

import pytest
from conftest import FROZEN_BIN
from kit import require
from kit.podman.dhcplan import dhcp_lan, leased
from kit.podman.node import PodmanNode

V4, V6 = "192.168.231.", "fd31::"


@pytest.fixture
def node(make_netns, frozen_bin):
    require(shutil.which("podman") is not None, "podman is not installed (podman, crun, conmon)")
    require(os.path.exists("/usr/sbin/dnsmasq"), "dnsmasq is not installed (Debian dnsmasq-base)")
    podman = PodmanNode(make_netns, FROZEN_BIN)
    yield podman
    podman.close()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def container_v6(node, name: str) -> list:
    """The container's global IPv6 addresses (busybox has no `ip -6`: /proc/net/if_inet6)."""
    table = node.exec(name, "cat", "/proc/net/if_inet6").stdout
    found = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] == "eth0" and fields[3] == "00":  # scope global
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return found


def test_dual_stack_macvlan_network_with_dhcp_ipam(node, tmp_path):
    with dhcp_lan(node, str(tmp_path), V4, V6) as leases:
        create = "network create -d macvlan -o parent=dhparent --ipam-driver dhcp dh6net"
        node.podman(*create.split())
        path = os.path.join(node.work, "net.d", "dh6net.conflist")
        with open(path) as f:
            conflist = json.load(f)
        (plugin,) = [p for p in conflist["plugins"] if p.get("ipam", {}).get("type") == "dhcp"]
        plugin["ipam"]["families"] = ["ipv4", "ipv6"]
        with open(path, "w") as f:
            json.dump(conflist, f)
        node.run_container("d", "--network", "dh6net")
        address4 = node.inspect_ip("d", "dh6net")
        assert address4.startswith(V4)
        (address6,) = container_v6(node, "d")
        assert address6.startswith(V6)
        held = leased(leases)
        assert address4 in held and address6 in held
        node.podman("rm", "-f", "-t", "0", "d")

        def released():
            text = leased(leases)
            return address4 not in text and address6 not in text

        wait_for(released, timeout=10, what="both releases in dnsmasq's lease file")
