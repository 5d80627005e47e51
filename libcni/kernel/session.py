"""The kernel session: one per network namespace a call touches, opened once by the verb.

A session holds the namespace (its fd, opened and checked once) and exactly one rtnetlink
socket living in it; every helper that changes or reads links, addresses or routes takes the
session and the `Link` objects the verb already holds, never a name to look up again or a netns
path to open again. This is the only place in the code base that opens an rtnetlink socket.

    from libcni.kernel.session import Session

    with Session() as host, Session(call.netns) as container, Rollback() as undo:
        bridge = host.require("cni0")                      # Link: index, name, mac, mtu, ...
        host.set_link(bridge, 'set "cni0" up', up=True)     # rtnl keywords; updates `bridge`
        port = container.create_link("eth0", "veth", peer=..., missing=...)
        undo.push(container.delete_link, port)              # undone through the same session
        container.add_address(port, "10.1.0.5", 16)
        with container.inside():                           # the thread in the netns, once
            sysctl.write(sysctl.iface_key("ipv4", port.name, "arp_notify"), "1")

`Session()` (or `Session(None)`, `Session("")`) is the caller's own namespace (the host side);
`Session(path)` opens CNI_NETNS (a missing path raises netns.NetnsMissing, a CNIError; DEL uses
`Session.existing(path)`, which gives None instead). The Rollback must be entered after the
sessions its steps use, so it unwinds while they are still open.

Lookups: `link(name)` (None when missing), `require(name, missing=...)` (a CNIError with the
operator's message), `link_by_index(index)`, `refresh(link)` (re-read in place, by index: e.g. a
bridge's MAC after a port joined). Changes: `set_link(link, failure, **changes)` with
rtnl.RouteSocket.set_link's keywords (up, promisc, allmulti, master, mac, mtu, txqlen, alias,
name, netns_fd, port_data); a refusal becomes CNIError "<failure>: <reason>". The socket itself
is `session.rtnl` for anything else rtnl (or the `socket_class`, e.g. rules.TableSocket) speaks.
"""

import errno
import os

from libcni.kernel import netns
from libcni.kernel.rtnl import IFF_ALLMULTI, IFF_PROMISC, IFF_UP, Link, RouteSocket
from libcni.protocol.errors import INTERNAL, CNIError

MAX_NAME = 15  # IFNAMSIZ - 1: a longer name can never exist, so no request is sent


def error_code(err: BaseException) -> int | None:
    """The errno of an OSError or a pyroute2 NetlinkError."""
    code = getattr(err, "code", None)
    if not isinstance(code, int):
        code = getattr(err, "errno", None)
    return code if isinstance(code, int) else None


def strerror(err: BaseException) -> str:
    """An OS or netlink error worded like Go prints it ("file exists")."""
    code = error_code(err)
    if code and code > 0:
        text = os.strerror(code)
        return text[:1].lower() + text[1:]
    return str(err)


class Session:
    """One network namespace for the length of a call: its fd and one rtnetlink socket."""

    # Test hook (tests/kernel/test_netlink_budget.py): when set, called as audit("open", netns_path)
    # for every session and audit("lookup", netns_path, name) for every lookup by name.
    audit = None

    def __init__(self, netns_path: str | None = None, *, socket_class=None, netns_fd: int = -1):
        self.netns_path = netns_path or None
        self._fd = netns_fd  # given: the caller's to close (an anonymous netns); else ours
        self._owns_fd = False
        if self.netns_path is not None and self._fd < 0:
            self._fd = netns.open_netns(self.netns_path)
            self._owns_fd = True
        try:
            where = self._fd if self._fd >= 0 else None
            self.rtnl = RouteSocket(where) if socket_class is None else socket_class(where)
        except BaseException:
            self._close_fd()
            raise
        if Session.audit is not None:
            Session.audit("open", self.netns_path)

    @classmethod
    def on_fd(cls, netns_fd: int, label: str) -> "Session":
        """A session on an open netns fd that has no path (host-device's temporary netns);
        `label` names it in messages. The fd stays the caller's."""
        return cls(label, netns_fd=netns_fd)

    @classmethod
    def existing(cls, netns_path: str | None, **kwargs) -> "Session | None":
        """A session on `netns_path`, or None when no path was given or the netns is gone
        (DEL is idempotent: there is nothing left to clean up in it)."""
        if not netns_path or not netns.exists(netns_path):
            return None
        try:
            return cls(netns_path, **kwargs)
        except netns.NetnsMissing:
            return None

    # -- the namespace ------------------------------------------------------------------------

    @property
    def netns_fd(self) -> int:
        """An fd of this namespace (opened on first use for the host side): where a link is
        created or moved to with `netns_fd=`."""
        if self._fd < 0:
            self._fd = os.open(netns.current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
            self._owns_fd = True
        return self._fd

    @property
    def where(self) -> str:
        """The namespace as an operator reads it in an error message."""
        return f'container netns "{self.netns_path}"' if self.netns_path else "host netns"

    def inside(self):
        """A context manager running its block with this thread inside the namespace (for
        /proc/sys/net writes and tun ioctls). The host side is where the thread already is.
        Group everything that needs it into one block: each entry is two setns calls."""
        if self.netns_path is None:
            return _Here()
        return netns.entered(self._fd)

    def shared(self) -> "_Borrowed":
        """This session as a context manager that does not close it: for a `with` that opens
        a session or reuses one (a master that lives in the container with linkInContainer)."""
        return _Borrowed(self)

    def close(self) -> None:
        self.rtnl.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._owns_fd and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- looking links up -----------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        if not name or len(name.encode()) > MAX_NAME:
            return None
        if Session.audit is not None:
            Session.audit("lookup", self.netns_path, name)
        try:
            return self.rtnl.link(name)
        except OSError as err:
            raise CNIError(INTERNAL, f'failed to look up "{name}": {strerror(err)}') from None

    def require(self, name: str, missing: str = "", details: str = "") -> Link:
        """The link called `name`, or CNIError(`missing`) (default: upstream's lookup text)."""
        link = self.link(name)
        if link is None:
            raise CNIError(
                INTERNAL, missing or f'failed to lookup "{name}": link not found', details
            )
        return link

    def link_by_index(self, index: int) -> Link | None:
        return self.rtnl.link_by_index(index)

    def refresh(self, link: Link) -> Link:
        """Re-read `link` by its index and update it in place (a bridge's MAC changes when a
        port joins, a port's oper-state when it comes up). A vanished link is left as it was."""
        fresh = self.rtnl.link_by_index(link.index)
        if fresh is not None:
            link.__dict__.update(fresh.__dict__)
        return link

    def links(self) -> list:
        """Every link of the namespace."""
        return self.rtnl.links()

    # -- creating, changing, deleting -------------------------------------------------------------

    def create_link(self, name: str, kind: str, *, failure: str = "", **settings) -> None:
        """RTM_NEWLINK of a new `kind` link (rtnl.RouteSocket.add_link's keywords; `netns_fd`
        creates it in another session's namespace). With `failure`, a refusal becomes
        CNIError "<failure>: <reason>"; without, the OSError reaches the caller (EEXIST is
        often an answer, not an error). Look the new link up where it lives."""
        try:
            self.rtnl.add_link(name, kind, **settings)
        except OSError as err:
            if not failure:
                raise
            raise CNIError(INTERNAL, f"{failure}: {strerror(err)}") from None

    def set_link(self, link: Link, failure: str, *, exists: str = "", **changes) -> Link:
        """Apply `changes` (RouteSocket.set_link keywords) to `link` and update it; a refusal
        becomes CNIError "<failure>: <reason>" (`exists` is the hint for EEXIST on a rename or
        move). A link moved away (`netns_fd`) keeps its fields but belongs to the other side."""
        try:
            self.rtnl.set_link(link.index, **changes)
        except OSError as err:
            details = exists if err.errno == errno.EEXIST else ""
            raise CNIError(INTERNAL, f"{failure}: {strerror(err)}", details) from None
        _apply(link, changes)
        return link

    def delete_link(self, link: Link, failure: str = "") -> bool:
        """Remove `link`; False when it was already gone. Other refusals: CNIError
        "<failure>: <reason>" (default: failed to delete "<name>")."""
        try:
            self.rtnl.delete_link(link.index)
        except OSError as err:
            if err.errno == errno.ENODEV:
                return False
            text = failure or f'failed to delete "{link.name}"'
            raise CNIError(INTERNAL, f"{text}: {strerror(err)}") from None
        return True

    # -- addresses and routes (raw OSErrors: callers word them as upstream does) -------------------

    def addresses(self, link: Link) -> list:
        """Every address on `link` as "ip/prefix", IPv4 first."""
        return self.rtnl.addresses(link.index)

    def address_flags(self, link: Link, family: int) -> list:
        """(address, prefixlen, flags) of every address of `family` (2 or 10) on `link`."""
        return self.rtnl.address_flags(link.index, family)

    def add_address(self, link: Link, address: str, prefixlen: int) -> None:
        self.rtnl.add_address(link.index, address, prefixlen)

    def delete_address(self, link: Link, address: str, prefixlen: int) -> None:
        self.rtnl.delete_address(link.index, address, prefixlen)

    def route(self, action: str, dst: str, dst_len: int, **kwargs) -> None:
        """Add or delete a route (rtnl.RouteSocket.route; pass oif=link.index)."""
        self.rtnl.route(action, dst, dst_len, **kwargs)

    def routes(self, family: int) -> list:
        """(dst "net/len", table, [gateway or None per hop]) of every route of `family`."""
        return self.rtnl.routes(family)


class _Borrowed:
    def __init__(self, session: Session):
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc):
        return False


class _Here:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# RouteSocket.set_link keyword -> (Link attribute) for the plain values it sets.
_FIELDS = {"name": "name", "mtu": "mtu", "txqlen": "txqlen"}
_FLAGS = {"up": IFF_UP, "promisc": IFF_PROMISC, "allmulti": IFF_ALLMULTI}


def _apply(link: Link, changes: dict) -> None:
    for key, field in _FIELDS.items():
        value = changes.get(key)
        if value not in (None, "", 0):
            setattr(link, field, value)
    if changes.get("mac"):
        link.mac = changes["mac"].lower().replace("-", ":")
    if changes.get("master") is not None:
        link.master = changes["master"] or None
    if changes.get("alias") is not None:
        link.alias = changes["alias"]
    for key, flag in _FLAGS.items():
        if changes.get(key) is not None:
            link.flags = link.flags | flag if changes[key] else link.flags & ~flag
