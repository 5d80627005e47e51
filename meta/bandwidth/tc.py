"""Traffic control for bandwidth, spoken over the host session's rtnetlink socket with the
standard library: token-bucket (tbf) qdiscs, the ingress qdisc, and a match-all u32 filter
redirecting a host veth's ingress to an ifb device. Every helper takes the session and the Links
it acts on (libcni.kernel.session).

The tbf numbers are computed exactly as upstream's Go plugin does (float maths truncated to
uint32, wrapping like amd64 Go), so a CHECK by either side accepts what the other created.
"""

import errno
import struct

from libcni.kernel.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_NEW,
    _attr,
    _attrs,
    _cstr,
    _nested,
)
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWTFILTER = 36, 37, 38, 44
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64 = 1, 4
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TCA_ACT_KIND, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS = 1, 2, 2
TCA_EGRESS_REDIR, TC_ACT_STOLEN, TC_U32_TERMINAL = 1, 4, 1
TC_H_ROOT, TC_H_INGRESS = 0xFFFFFFFF, 0xFFFFFFF1
INGRESS_HANDLE, TBF_HANDLE, FLOW_1_1 = 0xFFFF0000, 0x00010000, 0x00010001
ETH_P_ALL_BE = 0x0300  # htons(ETH_P_ALL)
TIME_UNITS_PER_SEC = 1_000_000
LATENCY_USEC = 25_000.0  # upstream's fixed 25 ms
UINT32 = 0xFFFFFFFF
BANDWIDTH_FAILURE = "failed to set up bandwidth limits"

# The kernel's structs, as <linux/rtnetlink.h> and <linux/pkt_sched.h> lay them out:
_TCMSG = struct.Struct("=BxHiIII")  # struct tcmsg
_RATESPEC = struct.Struct("=BBHhHI")  # struct tc_ratespec
_TBF_QOPT = struct.Struct("=12s12sIII")  # struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu
_U32_SEL = struct.Struct("=BBBxHHhhI")  # struct tc_u32_sel (without its keys)
_U32_KEY = struct.Struct("=IIii")  # struct tc_u32_key
_MIRRED = struct.Struct("=IIiiiiI")  # struct tc_mirred: tc_gen, then eaction and ifindex


def _u32(value: float) -> int:
    """Go's uint32(float64) on amd64: truncate toward zero, keep the low 32 bits."""
    return int(value) & UINT32


def tick_in_usec(psched: str = "/proc/net/psched") -> float:
    with open(psched) as f:
        t2us, us2t, _, clock_res = (int(part, 16) for part in f.read().split()[:4])
    if clock_res == 1_000_000_000:
        clock_res = TIME_UNITS_PER_SEC
    return t2us / us2t * (clock_res / TIME_UNITS_PER_SEC)


class Tbf:
    """tbf parameters for a rate and burst given in bits, as upstream's createTBF sets them."""

    def __init__(self, rate_bits: int, burst_bits: int, tick: float | None = None):
        tick = tick_in_usec() if tick is None else tick
        self.rate = rate_bits // 8  # bytes per second
        burst = _u32(burst_bits // 8)
        self.buffer = _u32(_u32(burst * TIME_UNITS_PER_SEC / self.rate) * tick)
        self.limit = (_u32(self.rate * LATENCY_USEC / TIME_UNITS_PER_SEC) + burst) & UINT32

    def options(self) -> bytes:
        rate = _RATESPEC.pack(0, 0, 0, 0, 0, min(self.rate, UINT32))
        parms = _TBF_QOPT.pack(rate, b"\0" * 12, self.limit, self.buffer, 0)
        attrs = _attr(TCA_TBF_PARMS, parms)
        if self.rate > UINT32:
            attrs += _attr(TCA_TBF_RATE64, struct.pack("=Q", self.rate))
        return attrs


def _tcmsg(index: int, handle: int, parent: int, info: int = 0) -> bytes:
    return _TCMSG.pack(0, 0, index, handle, parent, info)


def add_tbf(session: Session, link: Link, tbf: Tbf) -> None:
    """`tc qdisc add dev <link> root handle 1: tbf ...`"""
    body = _tcmsg(link.index, TBF_HANDLE, TC_H_ROOT)
    body += _attr(TCA_KIND, _cstr("tbf")) + _nested(TCA_OPTIONS, tbf.options())
    session.rtnl._request(RTM_NEWQDISC, NLM_F_NEW, body)


def add_ingress(session: Session, link: Link) -> None:
    """`tc qdisc add dev <link> handle ffff: ingress`"""
    body = _tcmsg(link.index, INGRESS_HANDLE, TC_H_INGRESS) + _attr(TCA_KIND, _cstr("ingress"))
    session.rtnl._request(RTM_NEWQDISC, NLM_F_NEW, body)


def delete_qdisc(session: Session, link: Link, handle: int, parent: int) -> None:
    """`tc qdisc del dev <link> handle <handle> parent <parent>`; quiet when it is gone."""
    try:
        session.rtnl._request(RTM_DELQDISC, NLM_F_ACK, _tcmsg(link.index, handle, parent))
    except OSError:
        pass


def add_redirect(session: Session, link: Link, target: Link) -> None:
    """u32 match-all filter (prio 1, protocol all, flowid 1:1) on the link's ingress qdisc
    whose action is `mirred egress redirect dev <target>` (packet stolen)."""
    selector = _U32_SEL.pack(TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + _U32_KEY.pack(0, 0, 0, 0)
    mirred = _MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target.index)
    action = _attr(TCA_ACT_KIND, _cstr("mirred"))
    action += _nested(TCA_ACT_OPTIONS, _attr(TCA_MIRRED_PARMS, mirred))
    options = _attr(TCA_U32_CLASSID, struct.pack("=I", FLOW_1_1))
    options += _attr(TCA_U32_SEL, selector) + _nested(TCA_U32_ACT, _nested(1, action))
    body = _tcmsg(link.index, 0, INGRESS_HANDLE, (1 << 16) | ETH_P_ALL_BE)
    body += _attr(TCA_KIND, _cstr("u32")) + _nested(TCA_OPTIONS, options)
    session.rtnl._request(RTM_NEWTFILTER, NLM_F_NEW, body)


def qdiscs(session: Session, link: Link) -> list:
    """(kind, handle, parent, tbf (rate, limit, buffer) or None) of the link's qdiscs."""
    found = []
    for _, payload in session.rtnl._request(RTM_GETQDISC, NLM_F_DUMP, _tcmsg(0, 0, 0)):
        _, _, owner, handle, parent, _ = _TCMSG.unpack_from(payload)
        if owner != link.index:
            continue
        attrs = _attrs(payload[_TCMSG.size :])
        kind = attrs.get(TCA_KIND, b"\0").rstrip(b"\0").decode()
        params = None
        if kind == "tbf":
            options = _attrs(attrs.get(TCA_OPTIONS, b""))
            if TCA_TBF_PARMS in options:
                rate, _, limit, buffer, _ = _TBF_QOPT.unpack_from(options[TCA_TBF_PARMS])
                rate = _RATESPEC.unpack(rate)[-1]
                if TCA_TBF_RATE64 in options:
                    rate = struct.unpack("=Q", options[TCA_TBF_RATE64])[0]
                params = (rate, limit, buffer)
        found.append((kind, handle, parent, params))
    return found


# -- bandwidth's host side ------------------------------------------------------------------
#
# The verb opens the sessions (libcni.kernel.session): the container's once, to find the veth's
# peer, and the host's once for everything else; the helpers below take the host session and
# the Links already in hand.


def host_peer(container: Session, host: Session, ifname: str, result) -> Link:
    """The host end of the container's veth, which must be listed in the result."""
    if not result.interfaces:
        raise CNIError(INTERNAL, "no interfaces provided")
    link = container.link(ifname)
    if link is None or link.kind != "veth" or not link.peer:
        raise CNIError(
            INTERNAL,
            f"container interface {ifname} has no veth peer",
            "bandwidth shapes veth-based networks (bridge, ptp, ...), not macvlan or ipvlan",
        )
    peer = host.link_by_index(link.peer)
    listed = {i.get("name") for i in result.interfaces if not i.get("sandbox")}
    if peer is None or peer.name not in listed:
        raise CNIError(INTERNAL, "no veth peer of container interface found in host ns")
    return peer


def shape(
    host: Session, host_veth: Link, ifb: str, owner: str, ingress: Tbf | None, egress: Tbf | None
):
    """Limit what enters the container (tbf on the host veth) and what leaves it (host veth
    ingress redirected to `ifb`, tbf there). Returns the ifb's result entry or None. Undone
    entirely if a step fails."""
    from libcni.rollback import Rollback

    try:
        with Rollback() as undo:
            if ingress is not None:
                add_tbf(host, host_veth, ingress)
                undo.push(delete_qdisc, host, host_veth, TBF_HANDLE, TC_H_ROOT)
            if egress is None:
                return None
            host.create_link(ifb, "ifb", mtu=host_veth.mtu)
            made = host.require(ifb, f'failed to find the new ifb device "{ifb}"')
            undo.push(host.delete_link, made)
            # Upstream sets txqueuelen 0 on purpose (see its ifb_creator.go); the alias names
            # the owner for GC (the kernel applies an alias only on a change, not at creation).
            host.set_link(made, BANDWIDTH_FAILURE, up=True, txqlen=0, alias=owner)
            add_ingress(host, host_veth)
            undo.push(delete_qdisc, host, host_veth, INGRESS_HANDLE, TC_H_INGRESS)
            add_redirect(host, host_veth, made)
            add_tbf(host, made, egress)
            return {"name": ifb, "mac": made.mac}
    except OSError as err:
        what = "ifb device already exists" if err.errno == errno.EEXIST else strerror(err)
        raise CNIError(INTERNAL, f"{BANDWIDTH_FAILURE}: {what}") from None


def remove_ifb(host: Session, name: str) -> None:
    link = host.link(name)
    if link is not None and link.kind == "ifb":
        _delete_quietly(host, link)


def _delete_quietly(host: Session, link: Link) -> None:
    try:
        host.delete_link(link)
    except CNIError:
        pass  # DEL and GC are best effort here, as upstream's


def check(
    host: Session, host_veth: Link, ifb: str, ingress: Tbf | None, egress: Tbf | None
) -> None:
    if ingress is not None:
        _check_tbf(host, host_veth, ingress)
    if egress is not None:
        link = host.link(ifb)
        if link is None:
            raise CNIError(INTERNAL, f"get ifb device: {ifb} not found")
        _check_tbf(host, link, egress)


def _check_tbf(host: Session, link: Link, wanted: Tbf) -> None:
    tbfs = [p for kind, _, parent, p in qdiscs(host, link) if kind == "tbf" and parent == TC_H_ROOT]
    if not tbfs:
        raise CNIError(INTERNAL, "Failed to find qdisc", f"no root tbf on {link.name}")
    rate, limit, buffer = tbfs[0]
    for name, have, want in (
        ("Rate", rate, wanted.rate),
        ("Limit", limit, wanted.limit),
        ("Buffer", buffer, wanted.buffer),
    ):
        if have != want:
            raise CNIError(
                INTERNAL, f"{name} doesn't match", f"{link.name}: {have}, expected {want}"
            )


def collect_ifbs(host: Session, owner_prefix: str, keep: set) -> None:
    """GC: delete our ifbs (alias `<owner_prefix><containerID>`) whose container is not kept."""
    for link in host.links():
        if link.kind == "ifb" and link.alias.startswith(owner_prefix):
            if link.alias[len(owner_prefix) :] not in keep:
                _delete_quietly(host, link)
