"""libcni/kernel/conntrack.py and routeget.py against the kernel, inside a netns the test owns
(conntrack tables are per netns). The `conntrack` tool only sets up and reads the table."""

import subprocess
import sys

from conftest import REPO, ns_exec


def entry(netns, *argv):
    ns_exec(netns, "conntrack", "-I", *argv, "-t", "120")


def table(netns) -> str:
    return ns_exec(netns, "conntrack", "-L", "-f", "ipv4", check=False) + ns_exec(
        netns, "conntrack", "-L", "-f", "ipv6", check=False
    )


def in_netns(netns, code: str) -> str:
    argv = [sys.executable, "-c", f"import sys; sys.path.insert(0, {REPO!r}); {code}"]
    return ns_exec(netns, *argv).strip()


def test_udp_entries_to_mapped_ports_go_and_the_rest_stay(netns):
    entry(
        netns,
        "-p",
        "udp",
        "-s",
        "192.0.2.9",
        "-d",
        "192.0.2.1",
        "--sport",
        "4000",
        "--dport",
        "15353",
    )
    entry(
        netns, "-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "4001", "--dport", "53"
    )
    entry(
        netns,
        "-p",
        "tcp",
        "-s",
        "192.0.2.9",
        "-d",
        "192.0.2.1",
        "--sport",
        "4002",
        "--dport",
        "15353",
        "--state",
        "ESTABLISHED",
    )
    gone = in_netns(
        netns,
        "from libcni.kernel import conntrack as c\n"
        "with c.ConntrackSocket() as s: print(c.forget_udp_to_ports(s, {15353}, 4))",
    )
    assert gone == "1"
    left = table(netns)
    assert "dport=53 " in left and "tcp" in left and "udp      17 " in left
    assert not any("udp" in line and "dport=15353" in line for line in left.splitlines())


def test_a_pods_udp_entries_go_in_both_families(netns):
    # A DNATed flow names the pod only in its reply tuple.
    entry(
        netns,
        "-p",
        "udp",
        "-s",
        "192.0.2.9",
        "-d",
        "192.0.2.1",
        "--sport",
        "4000",
        "--dport",
        "30080",
        "-r",
        "10.8.0.5",
        "-q",
        "192.0.2.9",
        "--reply-port-src",
        "80",
        "--reply-port-dst",
        "4000",
    )
    entry(
        netns, "-p", "udp", "-s", "10.8.0.5", "-d", "192.0.2.1", "--sport", "5000", "--dport", "53"
    )
    entry(netns, "-p", "udp", "-s", "fd08::5", "-d", "fd08::1", "--sport", "5000", "--dport", "53")
    entry(
        netns, "-p", "udp", "-s", "10.8.0.6", "-d", "192.0.2.1", "--sport", "5000", "--dport", "53"
    )
    gone = in_netns(
        netns,
        "from libcni.kernel import conntrack as c\n"
        "with c.ConntrackSocket() as s: print(c.forget_udp_of(s, ['10.8.0.5', 'fd08::5']))",
    )
    assert gone == "3"
    left = table(netns)
    assert "10.8.0.6" in left and "10.8.0.5" not in left and "fd08::5" not in left


def test_route_lookup_names_the_output_link(netns):
    ns_exec(netns, "ip", "link", "set", "lo", "up")
    ns_exec(netns, "ip", "link", "add", "rg0", "type", "veth", "peer", "rg1")
    ns_exec(netns, "ip", "addr", "add", "10.7.0.1/24", "dev", "rg0")
    ns_exec(netns, "ip", "link", "set", "rg0", "up")
    ns_exec(netns, "ip", "link", "set", "rg1", "up")
    out = in_netns(
        netns,
        "from libcni.kernel.routeget import output_link as o\n"
        "from libcni.kernel.session import Session\n"
        "with Session() as h: print(*(getattr(o(h, a), 'name', None) "
        "for a in ('10.7.0.9', '127.0.0.1', '198.51.100.1')))",
    )
    assert out == "rg0 lo None"


def test_no_conntrack_or_ip_route_get_is_executed():
    # The plugins' own code no longer runs either tool.
    found = subprocess.run(
        ["grep", "-rnE", r"\"conntrack\"|\"route\", \"get\"", "meta", "libcni", "plugins"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    assert found == ""
