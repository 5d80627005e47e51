"""The conntrack table over ctnetlink (NETLINK_NETFILTER), with the standard library.

portmap needs two things of it: forget UDP flows to a host port it is about to map (a flow
that existed before the DNAT keeps bypassing it: UDP has no handshake to end it), and forget a
deleted pod's UDP flows (else replies to a host port keep going to the dead pod's address, or
a new pod that reuses it gets a stranger's flow). Upstream runs the `conntrack` tool or
vishvananda/netlink for this; here it is one dump (IPCTNL_MSG_CT_GET) and one
IPCTNL_MSG_CT_DELETE per matching entry, keyed by the entry's original tuple and zone, in the
netns the caller is in. The caller opens one ConntrackSocket per call and passes it to each of
these (both families go through it). Failures are the caller's to ignore: this is best effort
everywhere.
"""

import struct

from libcni.kernel.netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, NetlinkSocket, _attr, _attrs
from libcni.kernel.rtnl import AF_INET, AF_INET6, _show_ip

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE = 1, 2, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 6, 17, 132
FAMILIES = {4: AF_INET, 6: AF_INET6}

_NFGENMSG = struct.Struct("=BBH")  # family, version (NFNETLINK_V0), res_id (big endian)


def _plain(data: bytes) -> dict:
    """Attributes by number, with the nested flag (ctnetlink sets it) masked off."""
    return {kind & ~NLA_F_NESTED: value for kind, value in _attrs(data).items()} if data else {}


class Tuple:
    """One direction of a flow: addresses and ports as the kernel holds them."""

    def __init__(self, family: int, data: bytes):
        attrs = _plain(data)
        ip = _plain(attrs.get(CTA_TUPLE_IP, b""))
        src, dst = (
            (CTA_IP_V4_SRC, CTA_IP_V4_DST) if family == AF_INET else (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        )
        self.src = _show_ip(family, ip[src]) if src in ip else ""
        self.dst = _show_ip(family, ip[dst]) if dst in ip else ""
        proto = _plain(attrs.get(CTA_TUPLE_PROTO, b""))
        self.proto = proto[CTA_PROTO_NUM][0] if CTA_PROTO_NUM in proto else 0
        self.sport = _port(proto.get(CTA_PROTO_SRC_PORT))
        self.dport = _port(proto.get(CTA_PROTO_DST_PORT))


def _port(raw: bytes | None) -> int:
    return struct.unpack("!H", raw[:2])[0] if raw else 0


class Flow:
    """A conntrack entry: its family, original and reply tuples, and what deleting it takes."""

    def __init__(self, family: int, payload: bytes):
        self.family = family
        attrs = _plain(payload[_NFGENMSG.size :])
        self._orig = attrs.get(CTA_TUPLE_ORIG, b"")
        self._zone = attrs.get(CTA_ZONE)
        self.orig = Tuple(family, self._orig)
        self.reply = Tuple(family, attrs.get(CTA_TUPLE_REPLY, b""))

    def key(self) -> bytes:
        """The attributes that name this entry in a delete request."""
        key = _attr(CTA_TUPLE_ORIG | NLA_F_NESTED, self._orig)
        return key + (_attr(CTA_ZONE, self._zone) if self._zone is not None else b"")


class ConntrackSocket(NetlinkSocket):
    """A ctnetlink socket in the caller's netns."""

    PROTOCOL = NETLINK_NETFILTER

    def _ct_request(self, message: int, flags: int, family: int, body: bytes = b"") -> list:
        kind = (NFNL_SUBSYS_CTNETLINK << 8) | message
        payload = _NFGENMSG.pack(family, 0, 0) + body
        return [chunk for _, chunk in self._request(kind, flags, payload)]

    def flows(self, family: int) -> list:
        replies = self._ct_request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, family)
        return [Flow(chunk[0], chunk) for chunk in replies if len(chunk) >= _NFGENMSG.size]

    def delete(self, flow: Flow) -> bool:
        """Delete one entry; False when it was gone already."""
        try:
            self._ct_request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, flow.family, flow.key())
        except FileNotFoundError:
            return False
        return True


def forget(sock: ConntrackSocket, select, versions=(4, 6)) -> int:
    """Delete every entry `select(flow)` picks, in the given IP versions; how many went."""
    gone = 0
    for version in versions:
        for flow in sock.flows(FAMILIES[version]):
            if select(flow) and sock.delete(flow):
                gone += 1
    return gone


def forget_udp_to_ports(sock: ConntrackSocket, ports, version: int) -> int:
    """UDP entries whose original destination port is one of `ports`."""
    wanted = set(ports)
    if not wanted:
        return 0
    return forget(
        sock, lambda f: f.orig.proto == IPPROTO_UDP and f.orig.dport in wanted, (version,)
    )


def forget_udp_of(sock: ConntrackSocket, addresses) -> int:
    """UDP entries of a pod: from one of `addresses`, or to one of them (also after a DNAT,
    where only the reply tuple names the pod)."""
    import ipaddress

    mine = {str(ipaddress.ip_address(a)) for a in addresses}
    versions = sorted({ipaddress.ip_address(a).version for a in mine})
    if not mine:
        return 0

    def of_pod(flow: Flow) -> bool:
        ends = (flow.orig.src, flow.orig.dst, flow.reply.src)
        return flow.orig.proto == IPPROTO_UDP and any(end in mine for end in ends)

    return forget(sock, of_pod, versions)
