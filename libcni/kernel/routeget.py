"""`ip route get <address>` over rtnetlink: which link the node would send a packet out of."""

import struct

from libcni.kernel.netlink import _attr, _attrs
from libcni.kernel.rtnl import RTA_DST, RTA_OIF, RTM_GETROUTE, RTM_NEWROUTE, Link, _ip

_RTMSG = struct.Struct("=BBBBBBBBI")


def output_link(session, address: str) -> Link | None:
    """The link a route lookup for `address` picks in the session's netns; None when nothing
    routes there."""
    family, packed = _ip(address)
    body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, packed)
    try:
        replies = session.rtnl._request(RTM_GETROUTE, 0, body)
    except OSError:  # ENETUNREACH and friends
        return None
    for msg_type, payload in replies:
        attrs = _attrs(payload[_RTMSG.size :])
        if msg_type == RTM_NEWROUTE and RTA_OIF in attrs:
            return session.link_by_index(struct.unpack("=I", attrs[RTA_OIF])[0])
    return None
