"""dhcp: DHCPv6 leases (stateful IA_NA) for IPv6-only and dual-stack pods, against a real dnsmasq.

The node is tests/dhcpnode.py's with ipv6=True: dnsmasq serves DHCPv4 and DHCPv6 on the macvlan
master's link (fd66::/64) and the bridge's (fd67::/64). Each test starts its own daemon in the
node netns and makes pod namespaces with make_netns; everything is deleted afterwards.
"""

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ip_json, run_plugin, unique_name
from dhcpnode import BR6_NET, MV6_NET, MV_NET, DaemonProcess, Node, wait_for

from ipam.dhcp import dhcp6packet as p6
from ipam.dhcp import rpc

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="no dnsmasq")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    found = Node(unique_name("dh6"), str(tmp_path_factory.mktemp("dhcp6-node")), ipv6=True)
    try:
        found.start_dnsmasq()
        yield found
    finally:
        found.close()


@pytest.fixture
def daemon(node, source_bin, tmp_path):
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        yield started
    finally:
        started.stop(signal.SIGKILL)


def mv_conf(daemon, families=("ipv6",), **ipam):
    return {
        "cniVersion": "1.1.0",
        "name": "dh6mv",
        "type": "macvlan",
        "master": "mst0",
        "ipam": {
            "type": "dhcp",
            "daemonSocketPath": daemon.socket,
            "families": list(families),
            **ipam,
        },
    }


def br_conf(daemon, families=("ipv4", "ipv6")):
    return {
        "cniVersion": "1.1.0",
        "name": "dh6br",
        "type": "bridge",
        "bridge": "brd0",
        "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket, "families": list(families)},
    }


def cni(plugin_dir, node, command, conf, pod="", **kw):
    return run_plugin(plugin_dir, conf["type"], command, conf, netns=pod, in_netns=node.path, **kw)


def ok(run):
    assert run.returncode == 0, run
    assert "Traceback" not in run.stderr, run
    return run.json if run.stdout.strip() else None


def v6_addresses(pod, ifname="eth0"):
    found = ip_json(pod, "-6", "addr", "show", "dev", ifname, "scope", "global")
    return [f"{a['local']}/{a['prefixlen']}" for e in found for a in e["addr_info"] if a]


def v6_leases(node) -> dict:
    """dnsmasq's DHCPv6 leases: {address: duid}."""
    return {ip: row[2] for ip, row in node.leases().items() if ":" in ip}


def duid_text(container_id, network, ifname="eth0"):
    duid = p6.duid_uuid(f"{container_id}/{network}/{ifname}")
    return ":".join(f"{b:02x}" for b in duid)


def test_ipv6_only_macvlan_lease_check_release(source_bin, node, daemon, make_netns):
    pod = make_netns("dh6p")
    conf = mv_conf(daemon)
    result = ok(cni(source_bin, node, "ADD", conf, pod, container_id="six1"))
    assert len(result["ips"]) == 1, result
    address = result["ips"][0]["address"]
    assert address.startswith(MV6_NET) and address.endswith("/128"), result
    assert address in v6_addresses(pod)
    ip = address.split("/")[0]
    assert v6_leases(node)[ip] == duid_text("six1", "dh6mv")
    conf["prevResult"] = result
    ok(cni(source_bin, node, "CHECK", conf, pod, container_id="six1"))
    del conf["prevResult"]
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="six1"))
    wait_for(lambda: ip not in v6_leases(node), what="dnsmasq to drop the released lease")
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="six1"))
    assert os.listdir(daemon.statedir) == []
