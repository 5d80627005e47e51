"""The meta plugins' netlink budget (issue #21): chained after a bridge or ptp ADD (dual stack),
bandwidth, tuning, firewall, portmap and sbr ADD, CHECK and DEL each open at most one netlink
socket per protocol in each namespace they touch (rtnetlink: the kernel session; ctnetlink:
portmap's conntrack flush), and look no link up by name twice.

Everything runs in-process in namespaces the test owns, counted by tests/netlink_budget.py
(around the netlink socket's opening and rtnetlink's lookup by name). vrf needs a kernel module
this kernel lacks: the VM suite runs it.
"""

import json
import os

import pytest
from conftest import NetnsFactory
from kit.netlink_budget import BudgetWorld

# In this order: sbr moves the container's routes out of main, so it goes last.
META = ("bandwidth", "tuning", "firewall", "portmap", "sbr")
ROUTE, NETFILTER = 0, 12  # netlink protocols
# Where each ADD must work: proof that the hook sees the calls, not only that they are few.
ADD_TOUCHES = {
    "bandwidth": {"host", "container"},
    "tuning": {"container"},
    "firewall": set(),  # iptables only (its tools' sockets are not ours)
    "portmap": {"host"},  # route_localnet's route lookup and the UDP conntrack flush
    "sbr": {"container"},
}


def meta_configs(data_dir: str) -> dict:
    return {
        "bandwidth": {
            "capabilities": {"bandwidth": True},
            "runtimeConfig": {
                "bandwidth": {
                    "ingressRate": 8_000_000,
                    "ingressBurst": 400_000,
                    "egressRate": 8_000_000,
                    "egressBurst": 400_000,
                }
            },
        },
        "tuning": {
            "sysctl": {"net.core.somaxconn": "1024"},
            "mtu": 1300,
            "promisc": True,
            "dataDir": os.path.join(data_dir, "tuning"),
        },
        "firewall": {"backend": "iptables", "dataDir": os.path.join(data_dir, "firewall")},
        "portmap": {
            "backend": "iptables",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {
                "portMappings": [
                    {"hostPort": 30080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 30053, "containerPort": 53, "protocol": "udp"},
                ]
            },
        },
        "sbr": {},
    }


class Chain:
    """A BudgetWorld with a main plugin's ADD done, and the meta plugins chained after it."""

    def __init__(self, world: BudgetWorld, main: str, data_dir: str):
        self.world = world
        self.configs = meta_configs(data_dir)
        ipam = {
            "type": "host-local",
            "dataDir": os.path.join(data_dir, "ipam"),
            "ranges": [[{"subnet": "10.96.7.0/24"}], [{"subnet": "fd96:7::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        }
        self.main = world.config(main, ipam=ipam)
        added = world.call(main, "ADD", self.main, ifname="eth0")
        self.previous = json.loads(added.verdict.stdout)
        self.names = {
            os.stat(world.host).st_ino: "host",
            os.stat(world.container).st_ino: "container",
        }

    def run(self, name: str, command: str):
        conf = {"cniVersion": "1.0.0", "name": self.main["name"], "type": name}
        conf.update(self.configs[name], prevResult=self.previous)
        return self.world.call(name, command, conf, ifname="eth0")

    def touched(self, counts, protocol: int) -> dict:
        """{"host" or "container": sockets of `protocol` opened there}."""
        found = counts.per_netns((protocol,))
        return {self.names.get(inode, str(inode)): n for inode, n in found.items()}

    def close(self) -> None:
        conf = dict(self.main, prevResult=self.previous)
        self.world.call(self.main["type"], "DEL", conf, ifname="eth0")


@pytest.fixture(scope="module", params=["bridge", "ptp"])
def chain(request, source_bin, tmp_path_factory):
    factory = NetnsFactory()
    data_dir = str(tmp_path_factory.mktemp("budget"))
    try:
        with BudgetWorld(factory, data_dir, source_bin) as world:
            made = Chain(world, request.param, data_dir)
            try:
                yield made
            finally:
                made.close()
    finally:
        factory.cleanup()


@pytest.mark.parametrize("name", META)
def test_one_socket_per_namespace_and_one_lookup_per_link(chain, name):
    for command in ("ADD", "CHECK", "DEL"):
        counts = chain.run(name, command)
        print(name, command, counts)  # shown when an assertion below fails
        counts.assert_within(per_netns=1, protocols=(ROUTE,))
        counts.assert_within(per_netns=1, protocols=(NETFILTER,))
        if command == "ADD":
            assert set(chain.touched(counts, ROUTE)) == ADD_TOUCHES[name]


def test_portmap_flushes_both_families_conntrack_through_one_socket(chain):
    # The UDP mapping makes portmap's ADD forget stale flows of the pod's IPv4 and IPv6 host
    # ports: one ctnetlink socket, in the host, for both.
    families = {6 if ":" in ip["address"] else 4 for ip in chain.previous["ips"]}
    assert families == {4, 6}, chain.previous
    counts = chain.run("portmap", "ADD")
    try:
        assert chain.touched(counts, NETFILTER) == {"host": 1}, counts
    finally:
        chain.run("portmap", "DEL")
