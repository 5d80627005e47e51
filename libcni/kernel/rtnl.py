"""A small rtnetlink client written with the standard library, for the hot paths.

Importing pyroute2 costs 130-180 ms and ~20 MiB per exec while the kernel work of an ADD takes
a few milliseconds. This module speaks the rtnetlink that loopback, bridge and ptp need on
every ADD and DEL (links, veth pairs, bridge ports, addresses, routes) with socket + struct;
the netlink framing itself is libcni.kernel.netlink, and libcni.kernel.session holds the one
socket of each namespace a call touches.
"""

import struct

from libcni.kernel.netlink import (
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_NEW,
    NetlinkSocket,
    _align,
    _attr,
    _attrs,
    _cstr,
    _nested,
    _u32,
)

# Socket constants by value: `import socket` costs ~4 ms and only addresses() needs it.
AF_INET, AF_INET6 = 2, 10
NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_TXQLEN = 1, 3, 4, 5, 10, 13
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 16, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BR_VLAN_FILTERING = 7
IFLA_BRPORT_MODE, IFLA_BRPORT_ISOLATED = 4, 33
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 6, 7, 15
RTA_MULTIPATH = 9
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_UNIVERSE = 254, 1, 0
RTPROT_BOOT = 3  # what upstream's netlink library leaves on the routes it adds
IFF_UP, IFF_PROMISC, IFF_ALLMULTI = 0x1, 0x100, 0x200
OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _ip(text: str) -> tuple:
    """(family, packed address) of an IPv4 or IPv6 address string."""
    from _socket import inet_pton

    family = AF_INET6 if ":" in text else AF_INET
    return family, inet_pton(family, text)


def _show_ip(family: int, raw: bytes) -> str:
    from _socket import inet_ntop

    return inet_ntop(family, raw)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _next_hop_gateways(family: int, data: bytes) -> list:
    """Gateways of an RTA_MULTIPATH list of rtnexthop records."""
    gateways = []
    offset = 0
    while offset + 8 <= len(data):
        length = struct.unpack_from("=H", data, offset)[0]
        if length < 8:
            break
        attrs = _attrs(data[offset + 8 : offset + length])
        gateways.append(_show_ip(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None)
        offset += _align(length)
    return gateways


class Link:
    """The parts of an RTM_NEWLINK message the plugins look at."""

    def __init__(self, index: int, flags: int, attrs: dict | None = None):
        self.index = index
        self.flags = flags
        attrs = attrs or {}
        self.name = attrs.get(IFLA_IFNAME, b"\0")[:-1].decode()
        self.mac = _mac(attrs[IFLA_ADDRESS]) if IFLA_ADDRESS in attrs else ""
        self.mtu = struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
        self.alias = attrs.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode()
        self.txqlen = struct.unpack("=I", attrs[IFLA_TXQLEN])[0] if IFLA_TXQLEN in attrs else 0
        self.master = struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else None
        self.peer = struct.unpack("=i", attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else None
        state = attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else 0
        self.operstate = OPER_STATES[state] if state < len(OPER_STATES) else "UNKNOWN"
        info = _attrs(attrs.get(IFLA_LINKINFO, b""))
        self.kind = info.get(IFLA_INFO_KIND, b"\0").rstrip(b"\0").decode()
        self.info_data = _attrs(info.get(IFLA_INFO_DATA, b""))  # raw, by attribute number

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @classmethod
    def parse(cls, payload: bytes) -> "Link":
        _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
        return cls(index, flags, _attrs(payload[_IFINFOMSG.size :]))


class RouteSocket(NetlinkSocket):
    """One NETLINK_ROUTE socket, living in the netns it was opened in."""

    PROTOCOL = NETLINK_ROUTE

    def link(self, name: str) -> Link | None:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            replies = self._request(RTM_GETLINK, 0, body)
        except OSError as err:
            if err.errno == 19:  # ENODEV
                return None
            raise
        for msg_type, payload in replies:
            if msg_type == RTM_NEWLINK:
                return Link.parse(payload)
        return None

    def link_by_index(self, index: int) -> Link | None:
        try:
            replies = self._request(RTM_GETLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, 0))
        except OSError as err:
            if err.errno == 19:  # ENODEV
                return None
            raise
        return next((Link.parse(p) for t, p in replies if t == RTM_NEWLINK), None)

    def links(self) -> list:
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0)
        return [
            Link.parse(p)
            for t, p in self._request(RTM_GETLINK, NLM_F_DUMP, body)
            if t == RTM_NEWLINK
        ]

    def add_link(
        self,
        name: str,
        kind: str,
        *,
        mtu: int = 0,
        mac: str = "",
        data: bytes = b"",
        peer: bytes = b"",
        parent: int | None = None,
        netns_fd: int | None = None,
    ) -> None:
        """RTM_NEWLINK with NLM_F_EXCL: EEXIST (OSError) when the name is taken. `parent` is
        the lower link of a macvlan/ipvlan/vlan; `netns_fd` creates the link in that netns."""
        attrs = _attr(IFLA_IFNAME, _cstr(name))
        if parent is not None:
            attrs += _attr(IFLA_LINK, _u32(parent))
        if netns_fd is not None:
            attrs += _attr(IFLA_NET_NS_FD, _u32(netns_fd))
        if mtu:
            attrs += _attr(IFLA_MTU, _u32(mtu))
        if mac:
            attrs += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        info = _attr(IFLA_INFO_KIND, kind.encode())
        if peer:
            data += _nested(VETH_INFO_PEER, peer)
        if data:
            info += _nested(IFLA_INFO_DATA, data)
        attrs += _nested(IFLA_LINKINFO, info)
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs
        self._request(RTM_NEWLINK, NLM_F_NEW, body)

    @staticmethod
    def veth_peer(name: str, *, netns_fd: int | None = None, mtu: int = 0) -> bytes:
        """The VETH_INFO_PEER payload for add_link(kind="veth")."""
        attrs = _attr(IFLA_IFNAME, _cstr(name))
        if netns_fd is not None:
            attrs += _attr(IFLA_NET_NS_FD, _u32(netns_fd))
        if mtu:
            attrs += _attr(IFLA_MTU, _u32(mtu))
        return _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs

    @staticmethod
    def bridge_data(vlan_filtering: bool) -> bytes:
        """IFLA_INFO_DATA for add_link(kind="bridge")."""
        return _attr(IFLA_BR_VLAN_FILTERING, b"\1") if vlan_filtering else b""

    @staticmethod
    def bridge_port_data(*, hairpin: bool, isolated: bool) -> bytes:
        """IFLA_INFO_SLAVE_DATA for set_link(port_data=...) on a bridge port."""
        mode = _attr(IFLA_BRPORT_MODE, bytes([hairpin]))
        return mode + _attr(IFLA_BRPORT_ISOLATED, bytes([isolated]))

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        promisc: bool | None = None,
        allmulti: bool | None = None,
        master: int | None = None,
        mac: str = "",
        mtu: int = 0,
        txqlen: int | None = None,
        alias: str | None = None,
        name: str = "",
        netns_fd: int | None = None,
        port_data: bytes = b"",
    ) -> None:
        flags = change = 0
        if allmulti is not None:
            flags |= IFF_ALLMULTI if allmulti else 0
            change |= IFF_ALLMULTI
        if up is not None:
            flags |= IFF_UP if up else 0
            change |= IFF_UP
        if promisc is not None:
            flags |= IFF_PROMISC if promisc else 0
            change |= IFF_PROMISC
        attrs = _attr(IFLA_IFNAME, _cstr(name)) if name else b""
        if netns_fd is not None:
            attrs += _attr(IFLA_NET_NS_FD, _u32(netns_fd))
        if master is not None:
            attrs += _attr(IFLA_MASTER, _u32(master))
        if mac:
            attrs += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
        if mtu:
            attrs += _attr(IFLA_MTU, _u32(mtu))
        if txqlen is not None:
            attrs += _attr(IFLA_TXQLEN, _u32(txqlen))
        if alias is not None:
            attrs += _attr(IFLA_IFALIAS, alias.encode())
        if port_data:
            info = _attr(IFLA_INFO_SLAVE_KIND, b"bridge") + _nested(IFLA_INFO_SLAVE_DATA, port_data)
            attrs += _nested(IFLA_LINKINFO, info)
        body = _IFINFOMSG.pack(0, 0, index, flags, change) + attrs
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def set_up(self, index: int, up: bool) -> None:
        body = _IFINFOMSG.pack(0, 0, index, IFF_UP if up else 0, IFF_UP)
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def delete_link(self, index: int) -> None:
        body = _IFINFOMSG.pack(0, 0, index, 0, 0)
        self._request(RTM_DELLINK, NLM_F_ACK, body)

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        """Like upstream's netlink.AddrAdd: IPv4 gets the subnet broadcast address too."""
        family, raw = _ip(address)
        attrs = _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        if family == AF_INET and prefixlen < 31:
            host_bits = (1 << (32 - prefixlen)) - 1
            broadcast = (int.from_bytes(raw, "big") | host_bits).to_bytes(4, "big")
            attrs += _attr(IFA_BROADCAST, broadcast)
        body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index) + attrs
        self._request(RTM_NEWADDR, NLM_F_NEW, body)

    def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        family, raw = _ip(address)
        body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index) + _attr(IFA_LOCAL, raw)
        self._request(RTM_DELADDR, NLM_F_ACK, body)

    def address_flags(self, index: int, family: int) -> list:
        """(address, prefixlen, flags) of every address of `family` on the link."""
        found = []
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        for _, payload in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            fam, prefix, flags8, _, owner = _IFADDRMSG.unpack_from(payload)
            if owner != index or fam != family:
                continue
            attrs = _attrs(payload[_IFADDRMSG.size :])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            flags = struct.unpack("=I", attrs[IFA_FLAGS])[0] if IFA_FLAGS in attrs else flags8
            if raw:
                found.append((_show_ip(family, raw), prefix, flags))
        return found

    def route(
        self,
        action: str,
        dst: str,
        dst_len: int,
        *,
        oif: int | None = None,
        gateway: str = "",
        prefsrc: str = "",
        scope: int = RT_SCOPE_UNIVERSE,
        priority: int = 0,
        table: int = RT_TABLE_MAIN,
        protocol: int = RTPROT_BOOT,
        append: bool = True,
    ) -> None:
        """Add ("add": NLM_F_APPEND, like `ip route append`, or exclusive) or delete a route.

        For "del", scope 255 (nowhere) and protocol 0 match whatever the route has."""
        family, raw = _ip(dst)
        attrs = _attr(RTA_DST, raw) if dst_len else b""
        if oif is not None:
            attrs += _attr(RTA_OIF, _u32(oif))
        if gateway:
            attrs += _attr(RTA_GATEWAY, _ip(gateway)[1])
        if prefsrc:
            attrs += _attr(RTA_PREFSRC, _ip(prefsrc)[1])
        if priority:
            attrs += _attr(RTA_PRIORITY, _u32(priority))
        small_table = table if table < 256 else 252  # RT_TABLE_COMPAT, real id in RTA_TABLE
        attrs += _attr(RTA_TABLE, _u32(table))
        if action == "del":
            rtm = _RTMSG.pack(family, dst_len, 0, 0, small_table, protocol, scope, 0, 0)
            self._request(RTM_DELROUTE, NLM_F_ACK, rtm + attrs)
            return
        rtm = _RTMSG.pack(family, dst_len, 0, 0, small_table, protocol, scope, RTN_UNICAST, 0)
        flags = NLM_F_ACK | NLM_F_CREATE | (NLM_F_APPEND if append else NLM_F_EXCL)
        self._request(RTM_NEWROUTE, flags, rtm + attrs)

    def routes(self, family: int) -> list:
        """(dst "net/len", table, [gateway or None per next hop]) of every route of `family`."""
        found = []
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for msg_type, payload in self._request(RTM_GETROUTE, NLM_F_DUMP, body):
            fam, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(payload)
            if msg_type != RTM_NEWROUTE or fam != family:
                continue
            attrs = _attrs(payload[_RTMSG.size :])
            zero = "0.0.0.0" if family == AF_INET else "::"
            dst = _show_ip(family, attrs[RTA_DST]) if RTA_DST in attrs else zero
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE])[0]
            gateways = [_show_ip(family, attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None]
            gateways += _next_hop_gateways(family, attrs.get(RTA_MULTIPATH, b""))
            found.append((f"{dst}/{dst_len}", table, gateways))
        return found

    def default_route_oif(self) -> int | None:
        """The output interface of the first default route (IPv4, then IPv6) in the main table."""
        for family in (AF_INET, AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for msg_type, payload in self._request(RTM_GETROUTE, NLM_F_DUMP, body):
                fam, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(payload)
                attrs = _attrs(payload[_RTMSG.size :])
                if RTA_TABLE in attrs:
                    table = struct.unpack("=I", attrs[RTA_TABLE])[0]
                if msg_type != RTM_NEWROUTE or fam != family or dst_len or table != RT_TABLE_MAIN:
                    continue
                if RTA_OIF in attrs:
                    return struct.unpack("=I", attrs[RTA_OIF])[0]
                hops = attrs.get(RTA_MULTIPATH, b"")
                if len(hops) >= 8:
                    return struct.unpack_from("=i", hops, 4)[0]
        return None

    def addresses(self, index: int) -> list:
        """Every address on the link as "ip/prefix", IPv4 first."""
        return [
            f"{address}/{prefix}"
            for family in (AF_INET, AF_INET6)
            for address, prefix, _ in self.address_flags(index, family)
        ]
