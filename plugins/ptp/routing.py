"""Routing for ptp's point-to-point veth: everything the container sends, even to its own
subnet, goes through the host end, which answers as the gateway.

Container side, per address: drop the kernel's connected route for the subnet, add the gateway
as an on-link /32 (/128) and the subnet via that gateway. Host side: the gateway address as a
/32 (/128) on the host veth and a host route to the container address through it.
"""

import errno
import ipaddress

from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError

RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 253, 254, 255


def _route(session: Session, action: str, what: str, dst: str, dst_len: int, **spec) -> None:
    try:
        session.route(action, dst, dst_len, append=False, **spec)
    except OSError as err:
        if action == "add" and err.errno == errno.EEXIST:
            return
        raise CNIError(INTERNAL, f"failed to {action} route {what}: {strerror(err)}") from None


def route_container(container: Session, link: Link, ips: list) -> None:
    ifname, index = link.name, link.index
    for entry in ips:
        iface = ipaddress.ip_interface(entry["address"])
        gateway, net, host_len = entry["gateway"], iface.network, iface.max_prefixlen
        subnet = str(net.network_address)
        # Scope "nowhere" and protocol 0 match the kernel's connected route, whatever it has.
        _route(
            container,
            "del",
            f"{net} dev {ifname}",
            subnet,
            net.prefixlen,
            oif=index,
            scope=RT_SCOPE_NOWHERE,
            protocol=0,
        )
        _route(
            container,
            "add",
            f"{gateway}/{host_len} dev {ifname}",
            gateway,
            host_len,
            oif=index,
            scope=RT_SCOPE_LINK,
            prefsrc=str(iface.ip),
        )
        _route(
            container,
            "add",
            f"{net} via {gateway} dev {ifname}",
            subnet,
            net.prefixlen,
            oif=index,
            gateway=gateway,
            prefsrc=str(iface.ip),
        )


def route_host(host: Session, link: Link, ips: list) -> None:
    host_veth, index = link.name, link.index
    for entry in ips:
        iface = ipaddress.ip_interface(entry["address"])
        host_len = iface.max_prefixlen
        try:
            host.add_address(link, entry["gateway"], host_len)
        except OSError as err:
            raise CNIError(
                INTERNAL,
                f"failed to add IP addr {entry['gateway']}/{host_len} to veth: {strerror(err)}",
            ) from None
        _route(
            host,
            "add",
            f"{iface.ip}/{host_len} dev {host_veth}",
            str(iface.ip),
            host_len,
            oif=index,
            scope=RT_SCOPE_HOST,
        )
