"""Routing for ptp's point-to-point veth: everything the container sends, even to its own
subnet, goes through the host end, which answers as the gateway.

Container side, per address: drop the kernel's connected route for the subnet, add the gateway
as an on-link /32 (/128) and the subnet via that gateway. Host side: the gateway address as a
/32 (/128) on the host veth and a host route to the container address through it.
"""

import errno
import ipaddress

from . import links, netlink
from .errors import INTERNAL, CNIError

RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 253, 254, 255


def _family(version: int) -> int:
    return 2 if version == 4 else 10


def _route(ipr, action: str, what: str, **spec) -> None:
    if action == "add":
        spec.setdefault("proto", 3)  # boot: what upstream's netlink library leaves on its routes
    try:
        ipr.route(action, **spec)
    except Exception as err:
        if action == "add" and links.error_code(err) == errno.EEXIST:
            return
        raise CNIError(
            INTERNAL, f"failed to {action} route {what}: {links.strerror(err)}"
        ) from None


def route_container(netns_path: str, ifname: str, ips: list) -> None:
    with netlink.session(netns_path) as ipr:
        index = netlink.link_index(ipr, ifname)
        if index is None:
            raise CNIError(INTERNAL, f'failed to look up "{ifname}": link not found')
        for entry in ips:
            iface = ipaddress.ip_interface(entry["address"])
            gateway = entry["gateway"]
            net, host_len, family = iface.network, iface.max_prefixlen, _family(iface.version)
            base = {"family": family, "oif": index}
            _route(
                ipr,
                "del",
                f"{net} dev {ifname}",
                dst=str(net.network_address),
                dst_len=net.prefixlen,
                # Match whatever scope and protocol the kernel gave its connected route.
                scope=RT_SCOPE_NOWHERE,
                proto=0,
                **base,
            )
            _route(
                ipr,
                "add",
                f"{gateway}/{host_len} dev {ifname}",
                dst=gateway,
                dst_len=host_len,
                scope=RT_SCOPE_LINK,
                prefsrc=str(iface.ip),
                **base,
            )
            _route(
                ipr,
                "add",
                f"{net} via {gateway} dev {ifname}",
                dst=str(net.network_address),
                dst_len=net.prefixlen,
                gateway=gateway,
                prefsrc=str(iface.ip),
                **base,
            )


def route_host(host_veth: str, ips: list) -> None:
    with netlink.session(None) as ipr:
        index = netlink.link_index(ipr, host_veth)
        if index is None:
            raise CNIError(INTERNAL, f'failed to lookup "{host_veth}": link not found')
        for entry in ips:
            iface = ipaddress.ip_interface(entry["address"])
            host_len = iface.max_prefixlen
            try:
                ipr.addr("add", index=index, address=entry["gateway"], prefixlen=host_len)
            except Exception as err:
                raise CNIError(
                    INTERNAL,
                    f"failed to add IP addr {entry['gateway']}/{host_len} to veth: "
                    f"{links.strerror(err)}",
                ) from None
            _route(
                ipr,
                "add",
                f"{iface.ip}/{host_len} dev {host_veth}",
                family=_family(iface.version),
                oif=index,
                dst=str(iface.ip),
                dst_len=host_len,
                scope=RT_SCOPE_HOST,
            )
