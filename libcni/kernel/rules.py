"""Policy routing over rtnetlink: FIB rules, routes in other tables, addresses as the kernel
dumped them. Used by sbr (rules `from <ip> lookup <table>`, routes copied into that table) and
vrf (routes and IPv6 addresses put back after enslaving). TableSocket extends rtnl.RouteSocket
and is the socket of their container session: `Session(path, socket_class=TableSocket)`, its
calls reached as `session.rtnl`.

Routes and addresses are kept as the kernel dumped them (header and attributes) and sent back
with only the table (or nothing) changed: a moved route keeps its protocol, scope, metric,
preference, source and next hops exactly, the way upstream's netlink library round-trips them.
"""

import struct

from libcni.kernel import rtnl
from libcni.kernel.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_NEW,
    _attr,
    _attrs,
    _u32,
)
from libcni.kernel.rtnl import (
    AF_INET,
    AF_INET6,
    RT_TABLE_MAIN,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PREFSRC,
    RTA_TABLE,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    _ip,
    _show_ip,
)

AF_UNSPEC = 0
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
NLM_F_REPLACE = 0x100
FRA_SRC, FRA_PRIORITY, FRA_TABLE = 2, 6, 15
FR_ACT_TO_TBL = 1
RT_TABLE_UNSPEC, RT_TABLE_COMPAT = 0, 252
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTA_DST = 1
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 6, 8
IFLA_VRF_TABLE = 1
# Route attributes a dump holds that also mean something on input; the rest (cache info,
# expiry, statistics) are dropped when a route is sent back.
ROUTE_INPUT_ATTRS = {1, 2, 4, 5, 6, 7, 8, 9, 11, 15, 18, 19, 20, 21, 22}
ADDRESS_INPUT_ATTRS = {IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS}

_HDR = struct.Struct("=BBBBBBBBI")  # struct rtmsg and struct fib_rule_hdr share this layout
_IFADDRMSG = struct.Struct("=BBBBI")


def _attr_list(data: bytes) -> list:
    """[(kind, payload)] in message order (rtnl._attrs keeps only the first of each kind)."""
    found = []
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.append((kind, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return found


def _small_table(table: int) -> int:
    return table if table < 256 else RT_TABLE_COMPAT


class Rule:
    """One FIB rule as dumped; `raw` is the message body, sent back as is to delete it."""

    def __init__(self, payload: bytes):
        self.raw = payload
        family, _, src_len, _, table, _, _, self.action, _ = _HDR.unpack_from(payload)
        attrs = _attrs(payload[_HDR.size :])
        self.family = family
        self.table = struct.unpack("=I", attrs[FRA_TABLE])[0] if FRA_TABLE in attrs else table
        self.priority = struct.unpack("=I", attrs[FRA_PRIORITY])[0] if FRA_PRIORITY in attrs else 0
        self.src = _show_ip(family, attrs[FRA_SRC]) if FRA_SRC in attrs else None
        self.src_len = src_len

    def __repr__(self) -> str:
        return f"Rule({self.priority}: from {self.src or 'all'}/{self.src_len} lookup {self.table})"


class Route:
    """One route as dumped: its header fields, its attributes in order, and what sbr and vrf
    look at (table, output link, gateway, preferred source, scope)."""

    def __init__(self, payload: bytes):
        fields = list(_HDR.unpack_from(payload))
        self.header = fields
        self.attrs = _attr_list(payload[_HDR.size :])
        self.family, self.dst_len, self.scope = fields[0], fields[1], fields[6]
        found = dict(reversed(self.attrs))
        self.table = struct.unpack("=I", found[RTA_TABLE])[0] if RTA_TABLE in found else fields[4]
        self.oif = struct.unpack("=I", found[RTA_OIF])[0] if RTA_OIF in found else None
        self.gateway = _show_ip(self.family, found[RTA_GATEWAY]) if RTA_GATEWAY in found else None
        self.prefsrc = _show_ip(self.family, found[RTA_PREFSRC]) if RTA_PREFSRC in found else None
        zero = "0.0.0.0" if self.family == AF_INET else "::"
        dst = _show_ip(self.family, found[RTA_DST]) if RTA_DST in found else zero
        self.dst = f"{dst}/{self.dst_len}"

    def body(self, table: int | None = None) -> bytes:
        """The message to send it back with: in `table` if given, flags cleared (a cloned or
        offloaded flag makes the kernel refuse the route), output-only attributes dropped."""
        header = list(self.header)
        header[8] = 0
        table = self.table if table is None else table
        header[4] = _small_table(table)
        out = b""
        for kind, payload in self.attrs:
            if kind == RTA_TABLE:
                payload = _u32(table)
            if kind in ROUTE_INPUT_ATTRS:
                out += _attr(kind, payload)
        if not any(kind == RTA_TABLE for kind, _ in self.attrs):
            out += _attr(RTA_TABLE, _u32(table))
        return _HDR.pack(*header) + out

    def __repr__(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        return f"Route({self.dst}{via} dev #{self.oif} table {self.table})"


class Address:
    """One address as dumped, to put back exactly (flags such as nodad, lifetimes)."""

    def __init__(self, payload: bytes):
        self.family, self.prefixlen, self.flags, self.scope, self.index = _IFADDRMSG.unpack_from(
            payload
        )
        self.attrs = _attr_list(payload[_IFADDRMSG.size :])
        found = dict(reversed(self.attrs))
        raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS) or b""
        self.address = _show_ip(self.family, raw) if raw else ""

    def body(self) -> bytes:
        out = b"".join(_attr(k, p) for k, p in self.attrs if k in ADDRESS_INPUT_ATTRS)
        header = _IFADDRMSG.pack(self.family, self.prefixlen, self.flags, self.scope, self.index)
        return header + out

    def __eq__(self, other) -> bool:
        return isinstance(other, Address) and (self.address, self.prefixlen) == (
            other.address,
            other.prefixlen,
        )

    def __hash__(self) -> int:
        return hash((self.address, self.prefixlen))


def vrf_data(table: int) -> bytes:
    """IFLA_INFO_DATA for add_link(kind="vrf")."""
    return _attr(IFLA_VRF_TABLE, _u32(table))


def vrf_table(link: rtnl.Link) -> int | None:
    """The routing table of a VRF link (None for any other kind)."""
    if link.kind != "vrf" or IFLA_VRF_TABLE not in link.info_data:
        return None
    return struct.unpack("=I", link.info_data[IFLA_VRF_TABLE])[0]


class TableSocket(rtnl.RouteSocket):
    """A RouteSocket that also speaks FIB rules and routes in any table."""

    # -- rules -----------------------------------------------------------------------------

    def rules(self, family: int = AF_UNSPEC) -> list:
        body = _HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [
            Rule(p) for t, p in self._request(RTM_GETRULE, NLM_F_DUMP, body) if t == RTM_NEWRULE
        ]

    def add_rule(self, src: str, table: int) -> None:
        """`ip rule add from <src>/32 (or /128) lookup <table>` with no priority: the kernel
        gives it the one below the first rule after `local` (32765, then 32764, ...), as it
        does for upstream, which sets none either."""
        family, raw = _ip(src)
        full = 32 if family == AF_INET else 128
        header = _HDR.pack(family, 0, full, 0, _small_table(table), 0, 0, FR_ACT_TO_TBL, 0)
        body = header + _attr(FRA_SRC, raw) + _attr(FRA_TABLE, _u32(table))
        self._request(RTM_NEWRULE, NLM_F_NEW, body)

    def delete_rule(self, rule: Rule) -> None:
        self._request(RTM_DELRULE, NLM_F_ACK, rule.raw)

    def delete_rule_from(self, src: str, table: int) -> None:
        """Delete one rule `from <src> lookup <table>`, whatever its priority (rollback)."""
        family, raw = _ip(src)
        full = 32 if family == AF_INET else 128
        header = _HDR.pack(family, 0, full, 0, _small_table(table), 0, 0, 0, 0)
        body = header + _attr(FRA_SRC, raw) + _attr(FRA_TABLE, _u32(table))
        self._request(RTM_DELRULE, NLM_F_ACK, body)

    # -- routes in any table ---------------------------------------------------------------

    def all_routes(self, family: int = AF_UNSPEC) -> list:
        """Every route of every table (unicast and the kernel's local/broadcast ones)."""
        found = []
        families = (AF_INET, AF_INET6) if family == AF_UNSPEC else (family,)
        for fam in families:
            body = _HDR.pack(fam, 0, 0, 0, 0, 0, 0, 0, 0)
            for msg_type, payload in self._request(RTM_GETROUTE, NLM_F_DUMP, body):
                if msg_type == RTM_NEWROUTE and payload[0] == fam:
                    found.append(Route(payload))
        return found

    def link_routes(self, index: int, table: int = RT_TABLE_MAIN) -> list:
        """The routes through link `index` in `table`, IPv4 first, in the kernel's order."""
        return [r for r in self.all_routes() if r.oif == index and r.table == table]

    def put_route(self, route: Route, table: int | None = None, *, replace: bool = True) -> None:
        """(Re)create `route`, in `table` if given: `ip route replace ... table <table>`."""
        flags = NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self._request(RTM_NEWROUTE, flags, route.body(table))

    def drop_route(self, route: Route, table: int | None = None) -> None:
        self._request(RTM_DELROUTE, NLM_F_ACK, route.body(table))

    def subnet_route(self, index: int, subnet: str, prefixlen: int, src: str) -> None:
        """`ip route replace <subnet> dev <link> src <src> scope link` in main (sbr's
        addSourceHints; no protocol given, so "boot" as upstream's library sends)."""
        family, raw = _ip(subnet)
        header = _HDR.pack(
            family,
            prefixlen,
            0,
            0,
            RT_TABLE_MAIN,
            rtnl.RTPROT_BOOT,
            RT_SCOPE_LINK,
            rtnl.RTN_UNICAST,
            0,
        )
        attrs = _attr(RTA_DST, raw) + _attr(RTA_OIF, _u32(index))
        attrs += _attr(RTA_PREFSRC, _ip(src)[1]) + _attr(RTA_TABLE, _u32(RT_TABLE_MAIN))
        self._request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, header + attrs)

    # -- addresses as dumped ---------------------------------------------------------------

    def link_addresses(self, index: int, family: int) -> list:
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        found = [
            Address(p) for t, p in self._request(RTM_GETADDR, NLM_F_DUMP, body) if t == RTM_NEWADDR
        ]
        return [a for a in found if a.index == index and a.family == family]

    def put_address(self, address: Address) -> None:
        self._request(RTM_NEWADDR, NLM_F_NEW, address.body())


def table_socket(session) -> TableSocket:
    """The socket of a session opened with `socket_class=TableSocket`."""
    sock = session.rtnl
    if not isinstance(sock, TableSocket):
        raise TypeError("the session was not opened with socket_class=TableSocket")
    return sock


def tables_in_use(session) -> set:
    """Every table a rule points at or a route lives in."""
    sock = table_socket(session)
    return {rule.table for rule in sock.rules()} | {route.table for route in sock.all_routes()}


def first_free_table(used: set, start: int) -> int:
    table = start
    while table in used:
        table += 1
    return table
