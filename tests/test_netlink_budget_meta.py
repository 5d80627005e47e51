"""The meta plugins' netlink budget (issue #21): chained after a bridge or ptp ADD, bandwidth,
tuning, sbr, firewall and portmap ADD, CHECK and DEL each open at most one netlink socket per
protocol in each namespace they touch (rtnetlink: the kernel session; ctnetlink: portmap's
conntrack flush), and look no link up by name twice.

The main plugin runs exec'd from source inside a test "host" netns; the meta plugins run
in-process through skel.dispatch with this thread inside that netns, so a counting hook around
the netlink socket's opening (netlink.NetlinkSocket._open, below every session and every
other socket) and around rtnetlink's lookup by name (rtnl.RouteSocket.link) sees each call.
"""

import collections
import io
import json
import os

import pytest
from conftest import NetnsFactory, ns_exec, run_plugin

META = {
    "bandwidth": "meta.bandwidth.bandwidth",
    "tuning": "meta.tuning.tuning",
    "firewall": "meta.firewall.firewall",
    "portmap": "meta.portmap.portmap",
    "sbr": "meta.sbr.sbr",  # last: it moves the container's routes out of main
}
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


class Tally:
    """Netlink sockets opened, by (netns inode, protocol), and rtnetlink lookups by name, by
    (netns inode, name), while installed."""

    def __init__(self, monkeypatch):
        from libcni.kernel import netlink, rtnl

        self.sockets: collections.Counter = collections.Counter()
        self.lookups: collections.Counter = collections.Counter()
        real_open, real_link = netlink.NetlinkSocket._open, rtnl.RouteSocket.link

        def counting_open(sock):
            # _open runs with the thread inside the socket's netns.
            sock.budget_netns = os.stat("/proc/thread-self/ns/net").st_ino
            self.sockets[(sock.budget_netns, sock.PROTOCOL)] += 1
            return real_open(sock)

        def counting_link(sock, name):
            self.lookups[(getattr(sock, "budget_netns", None), name)] += 1
            return real_link(sock, name)

        monkeypatch.setattr(netlink.NetlinkSocket, "_open", counting_open)
        monkeypatch.setattr(rtnl.RouteSocket, "link", counting_link)

    def reset(self) -> None:
        self.sockets.clear()
        self.lookups.clear()


class Chain:
    """A host and a container netns, a main plugin's ADD in them, and the meta plugins run
    in-process from the host netns with its prevResult."""

    def __init__(self, main: str, source_bin: str, data_dir: str):
        import importlib

        from libcni.kernel import netns

        self.factory = NetnsFactory()
        self.host = self.factory("nbh")
        self.container = self.factory("nbc")
        ns_exec(self.host, "ip", "link", "set", "lo", "up")
        self.source_bin = source_bin
        self.configs = meta_configs(data_dir)
        self.main = {
            "cniVersion": "1.0.0",
            "name": "budgetnet",
            "type": main,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "dataDir": os.path.join(data_dir, "ipam"),
                "ranges": [[{"subnet": "10.96.7.0/24"}], [{"subnet": "fd96:7::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            },
        }
        if main == "bridge":
            self.main.update(bridge="nbbr0", isGateway=True)
        self.inside = None
        added = self._main("ADD")
        assert added.returncode == 0, added
        self.previous = added.json
        self.names = {
            os.stat(self.host).st_ino: "host",
            os.stat(self.container).st_ino: "container",
        }
        self.plugins = {name: importlib.import_module(path).PLUGIN for name, path in META.items()}
        self.inside = netns.entered(self.host)
        self.inside.__enter__()

    def _main(self, command: str):
        return run_plugin(
            self.source_bin,
            self.main["type"],
            command,
            self.main,
            netns=self.container,
            in_netns=self.host,
            container_id="budget1",
        )

    def run(self, name: str, command: str) -> tuple:
        from libcni.protocol import skel

        conf = {"cniVersion": "1.0.0", "name": "budgetnet", "type": name}
        conf.update(self.configs[name], prevResult=self.previous)
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "budget1",
            "CNI_NETNS": self.container,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "",
            "CNI_PATH": self.source_bin,
        }
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="utf-8")
        err = io.StringIO()
        code = skel.dispatch(
            self.plugins[name], env, io.BytesIO(json.dumps(conf).encode()), out, err
        )
        out.flush()
        return code, raw.getvalue().decode(), err.getvalue()

    def where(self, inode) -> str:
        return self.names.get(inode, f"netns {inode}")

    def close(self) -> None:
        if self.inside is not None:
            self.inside.__exit__(None, None, None)
        try:
            self._main("DEL")
        finally:
            self.factory.cleanup()


@pytest.fixture(scope="module", params=["bridge", "ptp"])
def chain(request, source_bin, tmp_path_factory):
    made = Chain(request.param, source_bin, str(tmp_path_factory.mktemp("budget")))
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("name", list(META))
def test_one_socket_per_namespace_and_one_lookup_per_link(chain, name, monkeypatch):
    tally = Tally(monkeypatch)
    for command in ("ADD", "CHECK", "DEL"):
        tally.reset()
        code, out, err = chain.run(name, command)
        assert code == 0, f"{name} {command}: {out} {err[-1500:]}"
        over = {
            f"{chain.where(inode)} protocol {protocol}": count
            for (inode, protocol), count in tally.sockets.items()
            if count > 1
        }
        assert not over, f"{name} {command} opened more than one netlink socket: {over}"
        twice = {
            f"{chain.where(inode)} {link}": count
            for (inode, link), count in tally.lookups.items()
            if count > 1
        }
        assert not twice, f"{name} {command} looked links up by name more than once: {twice}"
        if command == "ADD":
            touched = {chain.where(inode) for inode, protocol in tally.sockets if protocol == ROUTE}
            assert touched == ADD_TOUCHES[name], tally.sockets


def test_portmap_flushes_both_families_conntrack_through_one_socket(chain, monkeypatch):
    # The UDP mapping makes portmap's ADD forget stale flows of the pod's IPv4 and IPv6 host
    # ports: one ctnetlink socket, in the host, for both.
    tally = Tally(monkeypatch)
    code, out, err = chain.run("portmap", "ADD")
    assert code == 0, f"{out} {err[-1500:]}"
    try:
        ctnetlink = {chain.where(i): n for (i, p), n in tally.sockets.items() if p == NETFILTER}
        assert ctnetlink == {"host": 1}
    finally:
        chain.run("portmap", "DEL")
