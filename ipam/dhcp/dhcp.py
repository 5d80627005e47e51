"""dhcp: addresses from a DHCP server on the container's network, kept by a long-running daemon.

One executable, two modes, as upstream: `dhcp daemon [flags]` runs the daemon (ipam/dhcp/
daemon.py), anything else is the plugin, which hands each verb to the daemon over its unix socket
(ipam/dhcp/rpc.py; our own protocol). The plugin side stays light: config, option lists, one
socket round trip. Fixes over upstream: DEL succeeds when the daemon or the lease is gone, CHECK
only looks at the held lease, DNS from the lease is in the result, GC and STATUS exist.
"""

import os
import sys

from ipam.dhcp import options, rpc
from libcni.protocol import config, skel
from libcni.protocol.errors import (
    INVALID_NETWORK_CONFIG,
    PLUGIN_NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CNIError,
)
from libcni.protocol.result import Result

VALID_ATTACHMENTS = "cni.dev/valid-attachments"
# ADD may wait for the daemon's whole resend schedule (-resendtimeout, 208 s by default).
ALLOCATE_TIMEOUT = 600.0
SHORT_TIMEOUT = 30.0


class RequestOption(config.Struct):
    skipDefault: bool = False
    option: str = ""


class ProvideOption(config.Struct):
    option: str = ""
    value: str = ""
    fromArg: str = ""


class IPAMConf(config.Struct):
    type: str = ""
    daemonSocketPath: str = ""
    request: list[RequestOption] = []
    provide: list[ProvideOption] = []
    priority: int = 0
    # Ours: which leases to get. Absent: DHCPv4 alone, the request exactly as before.
    families: list[str] = []
    rapidCommit: bool = True  # DHCPv6: ask for Solicit -> Reply (the server may say no)


class Conf(config.NetConf):
    ipam: IPAMConf = None  # type: ignore[assignment]


def _ipam(call: skel.Call) -> IPAMConf:
    conf = call.load(Conf)
    if conf.ipam is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key")
    return conf.ipam


FAMILIES = ("ipv4", "ipv6")


def _families(ipam: IPAMConf, params: dict) -> dict:
    """`params` with the config's address families, when it names any."""
    if ipam.families:
        if not set(ipam.families) <= set(FAMILIES) or len(set(ipam.families)) != len(ipam.families):
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f"ipam families {ipam.families}: a list of distinct 'ipv4' and 'ipv6'",
            )
        params["families"] = list(ipam.families)
        if "ipv6" in ipam.families:
            params["rapidCommit"] = ipam.rapidCommit
    return params


def _socket_path(ipam: IPAMConf) -> str:
    return ipam.daemonSocketPath or rpc.DEFAULT_SOCKET


def _attachment(call: skel.Call) -> dict:
    return {"containerID": call.container_id, "network": call.network_name, "ifname": call.ifname}


def add(call: skel.Call) -> Result:
    ipam = _ipam(call)
    params = _attachment(call)
    params.update(
        netns=os.path.abspath(call.netns),  # the daemon may run in another directory
        request=options.requested(ipam),
        provide=options.provided(ipam, call.args),
        priority=ipam.priority,
    )
    _families(ipam, params)
    lease = rpc.call(_socket_path(ipam), "allocate", params, ALLOCATE_TIMEOUT)
    return Result.from_json(dict(lease, cniVersion="1.1.0"), "1.1.0")


def check(call: skel.Call) -> None:
    """The daemon must hold a live lease for this attachment (no DHCP exchange), and it must
    still be the address the runtime recorded, when there is a prevResult."""
    ipam = _ipam(call)
    params = _families(ipam, _attachment(call))
    params.pop("rapidCommit", None)
    previous = call.prev_result()
    if previous is not None:
        params["addresses"] = [entry["address"] for entry in previous.ips]
    rpc.call(_socket_path(ipam), "check", params, SHORT_TIMEOUT)


def delete(call: skel.Call) -> None:
    ipam = _ipam(call)
    try:
        rpc.call(_socket_path(ipam), "release", _attachment(call), SHORT_TIMEOUT)
    except rpc.DaemonUnreachable as err:
        # Nothing to release with: a daemon that comes back renews only what it still holds,
        # and GC releases leases of attachments that are gone.
        call.log(f"dhcp: DEL: {err.msg}; nothing released")


def _valid_attachments(call: skel.Call) -> list:
    raw = call.conf.get(VALID_ATTACHMENTS)
    if not isinstance(raw, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("containerID"), str)
        and isinstance(entry.get("ifname"), str)
        for entry in raw
    ):
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"GC needs {VALID_ATTACHMENTS}: a list of {{containerID, ifname}} objects",
            "nothing was released",
        )
    return [[entry["containerID"], entry["ifname"]] for entry in raw]


def gc(call: skel.Call) -> None:
    """Release this network's leases whose attachment the runtime no longer lists."""
    ipam = _ipam(call)
    valid = _valid_attachments(call)
    try:
        rpc.call(
            _socket_path(ipam), "gc", {"network": call.network_name, "valid": valid}, SHORT_TIMEOUT
        )
    except rpc.DaemonUnreachable as err:
        raise CNIError(TRY_AGAIN_LATER, err.msg, err.details) from None


def status(call: skel.Call) -> None:
    ipam = _ipam(call)
    try:
        rpc.call(_socket_path(ipam), "status", {}, SHORT_TIMEOUT)
    except rpc.DaemonUnreachable as err:
        raise CNIError(
            PLUGIN_NOT_AVAILABLE, f"DHCP daemon not reachable: {err.msg}", err.details
        ) from None


PLUGIN = skel.Plugin("dhcp", add=add, delete=delete, check=check, gc=gc, status=status)


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["daemon"]:  # only the explicit argument ever starts serving
        from ipam.dhcp import daemon

        return daemon.main(argv[1:])
    return skel.main(PLUGIN)
