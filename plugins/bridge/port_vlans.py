"""VLANs of a bridge port (access VLAN, trunk, the default VLAN 1), spoken over the host
session's rtnetlink socket: what `bridge vlan add/del/show` sends (AF_BRIDGE link messages
carrying IFLA_AF_SPEC/IFLA_BRIDGE_VLAN_INFO), so no second socket and no pyroute2 import."""

import struct

from libcni.kernel.netlink import NLM_F_ACK, NLM_F_DUMP, _attr, _attrs
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError

AF_BRIDGE = 7
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
IFLA_AF_SPEC, IFLA_EXT_MASK = 26, 29
IFLA_BRIDGE_VLAN_INFO = 2
RTEXT_FILTER_BRVLAN = 1 << 1
# Bridge VLAN flags (BRIDGE_VLAN_INFO_*): the port's native VLAN and "send untagged".
VLAN_PVID, VLAN_UNTAGGED = 0x2, 0x4

_IFINFOMSG = struct.Struct("=BxHiII")
_VLAN_INFO = struct.Struct("=HH")  # struct bridge_vlan_info: flags, vid


def configure(host: Session, port: Link, vlan: int, trunk: list, preserve_default: bool) -> None:
    """Upstream's order: drop what the port has (unless preserveDefaultVlan), the access VLAN
    as PVID untagged, the trunk VLANs tagged, and VLAN 1 as PVID untagged without an access
    VLAN."""
    if not preserve_default:
        for vid in vlans_of(host, port):
            _change(host, RTM_DELLINK, port, vid, 0)
    if vlan:
        _change(host, RTM_SETLINK, port, vlan, VLAN_PVID | VLAN_UNTAGGED)
    for vid in trunk:
        _change(host, RTM_SETLINK, port, vid, 0)
    if not vlan:
        _change(host, RTM_SETLINK, port, 1, VLAN_PVID | VLAN_UNTAGGED)


def _change(host: Session, message: int, port: Link, vid: int, flags: int) -> None:
    spec = _attr(IFLA_AF_SPEC, _attr(IFLA_BRIDGE_VLAN_INFO, _VLAN_INFO.pack(flags, vid)))
    body = _IFINFOMSG.pack(AF_BRIDGE, 0, port.index, 0, 0) + spec
    try:
        host.rtnl._request(message, NLM_F_ACK, body)
    except OSError as err:
        raise CNIError(
            INTERNAL, f'failed to setup vlan tag on interface "{port.name}": {strerror(err)}'
        ) from None


def vlans_of(host: Session, port: Link) -> list:
    """The VLAN ids configured on bridge port `port`."""
    body = _IFINFOMSG.pack(AF_BRIDGE, 0, 0, 0, 0) + _attr(
        IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_BRVLAN)
    )
    found = []
    for msg_type, payload in host.rtnl._request(RTM_GETLINK, NLM_F_DUMP, body):
        if msg_type != RTM_NEWLINK or _IFINFOMSG.unpack_from(payload)[2] != port.index:
            continue
        spec = _attrs(payload[_IFINFOMSG.size :]).get(IFLA_AF_SPEC, b"")
        offset = 0
        while offset + 4 <= len(spec):  # every VLAN is its own IFLA_BRIDGE_VLAN_INFO
            length, kind = struct.unpack_from("=HH", spec, offset)
            if length < 4:
                break
            if kind & 0x3FFF == IFLA_BRIDGE_VLAN_INFO and length >= 8:
                found.append(_VLAN_INFO.unpack_from(spec, offset + 4)[1])
            offset += (length + 3) & ~3
    return found
