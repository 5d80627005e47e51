"""Counting netlink sockets and lookups by name per plugin call (issue #21), for
tests/kernel/test_netlink_budget.py and tests/kernel/test_netlink_budget_meta.py.

Plugins run in-process (skel.dispatch, as tests/kit/fuzzkit.py's InProcess runner does) with this
thread inside a "host" netns the test owns, against a container netns it owns too. A Counter
wraps the one place every stdlib netlink socket is opened (libcni.kernel.netlink.NetlinkSocket
._open) and the by-name link lookup of rtnetlink (RouteSocket.link), and attributes each to the
netns it lives in (by nsfs inode).

    with BudgetWorld(factory, data_dir, cni_path) as world:
        counts = world.call("bridge", "ADD", conf)     # a Counts, with counts.verdict
        counts.assert_within(per_netns=1, total=2)
"""

import json
import os

from kit import fuzzkit

NETLINK_ROUTE = 0


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class Counts:
    """What one call opened and looked up: sockets as (protocol, netns inode), lookups by name
    as (netns inode, name)."""

    def __init__(self):
        self.sockets: list = []
        self.lookups: list = []
        self.verdict = None

    def per_netns(self, protocols=None) -> dict:
        found: dict = {}
        for protocol, inode in self.sockets:
            if protocols is None or protocol in protocols:
                found[inode] = found.get(inode, 0) + 1
        return found

    def repeated_lookups(self) -> list:
        return sorted({key for key in self.lookups if self.lookups.count(key) > 1})

    def assert_within(self, per_netns: int = 1, total: int | None = None, protocols=None) -> None:
        """At most `per_netns` netlink sockets in any netns (of `protocols`, default all), at
        most `total` in all, and no link looked up by name twice in the same netns."""
        by_netns = self.per_netns(protocols)
        assert all(n <= per_netns for n in by_netns.values()), (by_netns, self.sockets)
        if total is not None:
            assert sum(by_netns.values()) <= total, (by_netns, self.sockets)
        assert self.repeated_lookups() == [], self.lookups

    def __repr__(self) -> str:
        return f"Counts(sockets={self.sockets}, lookups={self.lookups})"


class Counter:
    """Patches the socket opening and the lookup by name while active (a context manager)."""

    def __init__(self):
        self.counts = Counts()
        self._saved: tuple = ()

    def __enter__(self) -> Counts:
        from libcni.kernel.netlink import NetlinkSocket
        from libcni.kernel.rtnl import RouteSocket

        counts = self.counts
        homes: dict = {}
        real_open, real_link = NetlinkSocket._open, RouteSocket.link

        def counting_open(sock_self):
            sock = real_open(sock_self)  # runs in the netns the socket will live in
            homes[id(sock)] = _netns_inode()
            counts.sockets.append((sock_self.PROTOCOL, homes[id(sock)]))
            return sock

        def counting_link(sock_self, name):
            counts.lookups.append((homes.get(id(sock_self.sock)), name))
            return real_link(sock_self, name)

        self._saved = (real_open, real_link)
        NetlinkSocket._open = counting_open  # type: ignore[method-assign]
        RouteSocket.link = counting_link  # type: ignore[method-assign]
        return counts

    def __exit__(self, *exc) -> None:
        from libcni.kernel.netlink import NetlinkSocket
        from libcni.kernel.rtnl import RouteSocket

        NetlinkSocket._open, RouteSocket.link = self._saved  # type: ignore[method-assign]


class BudgetWorld(fuzzkit.InProcessWorld):
    """fuzzkit's in-process world (host and container netns, a runner) for counting a plugin
    call's netlink requests. Close it (or use `with`)."""

    def __init__(self, factory, data_dir: str, cni_path: str):
        super().__init__(factory, data_dir, cni_path, "nb")

    def config(self, name: str, **changes) -> dict:
        """fuzzkit's valid config of plugin `name`, with `changes` on top."""
        conf = fuzzkit.full_config(name, self.data_dir, self.container)
        conf.update(changes)
        return conf

    def call(self, name: str, command: str, conf: dict, ifname: str = "") -> Counts:
        """Run one verb and count; the call must succeed."""
        env = fuzzkit.base_env(
            command, self.container, self.cni_path, ifname or fuzzkit.ifname_for(name)
        )
        counter = Counter()
        with counter as counts:
            counts.verdict = self.runner(name, env, fuzzkit.encode(conf))
        assert counts.verdict.rc == 0, counts.verdict
        return counts

    def lifecycle(self, name: str, conf: dict, ifname: str = "") -> dict:
        """ADD, CHECK with the ADD's result as prevResult (CNI 1.0.0), DEL: their Counts."""
        added = self.call(name, "ADD", conf, ifname)
        checked_conf = dict(conf, prevResult=json.loads(added.verdict.stdout))
        checked = self.call(name, "CHECK", checked_conf, ifname)
        deleted = self.call(name, "DEL", checked_conf, ifname)
        return {"ADD": added, "CHECK": checked, "DEL": deleted}
