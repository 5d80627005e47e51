"""A minimal rtnetlink client for the hottest, simplest path: link flags and address dumps.

loopback runs for every pod, and importing pyroute2 costs ~150 ms per exec while the kernel work
takes well under a millisecond. This module speaks just enough rtnetlink with the standard
library (socket + struct) for loopback; everything richer uses pyroute2 via libcni.netlink.
"""

import os
import struct

from . import netns

# Socket constants by value: `import socket` costs ~4 ms and only addresses() needs it.
AF_INET, AF_INET6, AF_NETLINK = 2, 10, 16
SOCK_RAW, SOCK_CLOEXEC = 3, 0o2000000
NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_GETADDR = 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def _attrs(data: bytes) -> dict:
    found: dict = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found.setdefault(kind, data[offset + _RTATTR.size : offset + length])
        offset += _align(length)
    return found


class Link:
    def __init__(self, index: int, flags: int):
        self.index = index
        self.flags = flags

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class RouteSocket:
    """One NETLINK_ROUTE socket, living in the netns it was opened in."""

    def __init__(self, netns_path: str | None = None):
        if netns_path:
            with netns.entered(netns_path):
                self.sock = self._open()
        else:
            self.sock = self._open()
        self.seq = 0

    @staticmethod
    def _open():
        from _socket import socket

        sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)
        sock.bind((0, 0))
        return sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, kind: int, flags: int, body: bytes) -> list:
        """Send one request; return the (type, payload) replies up to DONE or the ACK."""
        self.seq += 1
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, self.seq, 0
        )
        self.sock.send(header + body)
        replies: list = []
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                payload = data[offset + _NLMSGHDR.size : offset + length]
                offset += _align(length)
                if seq != self.seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return replies
                if msg_type == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", payload)
                    if error:
                        raise OSError(-error, os.strerror(-error))
                    return replies
                replies.append((msg_type, payload))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies

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
                _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
                return Link(index, flags)
        return None

    def set_up(self, index: int, up: bool) -> None:
        body = _IFINFOMSG.pack(0, 0, index, IFF_UP if up else 0, IFF_UP)
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def delete_link(self, index: int) -> None:
        body = _IFINFOMSG.pack(0, 0, index, 0, 0)
        self._request(RTM_DELLINK, NLM_F_ACK, body)

    def addresses(self, index: int) -> list:
        """Every address on the link as "ip/prefix", IPv4 first."""
        from _socket import inet_ntop

        found: dict = {AF_INET: [], AF_INET6: []}
        for family in found:
            body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
            for _, payload in self._request(RTM_GETADDR, NLM_F_DUMP, body):
                fam, prefix, _, _, owner = _IFADDRMSG.unpack_from(payload)
                if owner != index or fam != family:
                    continue
                attrs = _attrs(payload[_IFADDRMSG.size :])
                raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
                if raw:
                    found[family].append(f"{inet_ntop(family, raw)}/{prefix}")
        return found[AF_INET] + found[AF_INET6]
