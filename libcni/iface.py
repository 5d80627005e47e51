"""Configuring a container interface from an IPAM result (upstream's ipam.ConfigureIface).

Inside the container netns: enable IPv6 where needed, add the addresses that point at this
interface, bring it up, wait for IPv6 duplicate address detection when a v6 gateway will be
used, then add the routes (gateway from the route, else the first gateway of the same family).
"""

import ipaddress
import time

from . import netlink, netns, sysctl
from .errors import INTERNAL, CNIError

DAD_POLL = 0.05
DAD_TIMEOUT = 5.0
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
RT_SCOPES = {"universe": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}


def _enable_ipv6(ifname: str) -> None:
    for name in ("lo", ifname):
        key = sysctl.iface_key("ipv6", name, "disable_ipv6")
        try:
            sysctl.ensure(key, "0")
        except OSError as err:
            raise CNIError(INTERNAL, f"failed to enable IPv6 on {name}: {err}") from None
    try:
        sysctl.ensure(sysctl.iface_key("ipv6", ifname, "keep_addr_on_down"), "1")
    except OSError:
        pass  # old kernels lack the key; upstream ignores this too


def _wait_for_dad(ipr, index: int, ifname: str) -> None:
    deadline = time.monotonic() + DAD_TIMEOUT
    while True:
        tentative = False
        for msg in ipr.get_addr(index=index, family=10):
            flags = msg.get("IFA_FLAGS") or msg["flags"]
            if flags & IFA_F_DADFAILED:
                raise CNIError(
                    INTERNAL,
                    f"IPv6 duplicate address detection failed on {ifname} "
                    f"for {msg.get('IFA_ADDRESS')}",
                )
            if flags & IFA_F_TENTATIVE:
                tentative = True
        if not tentative:
            return
        if time.monotonic() > deadline:
            link = ipr.get_links(index)[0]
            if link.get("IFLA_OPERSTATE") == "UP":
                raise CNIError(
                    INTERNAL,
                    f"timed out waiting for IPv6 addresses on {ifname} "
                    "to leave the tentative state",
                )
            return
        time.sleep(DAD_POLL)


def _route_text(route: dict, gateway, ifname: str) -> str:
    text = f"{route['dst']}"
    if gateway:
        text += f" via {gateway}"
    return text + f" dev {ifname} metric {route.get('priority', 0)}"


def configure(netns_path: str, ifname: str, result) -> None:
    """Apply `result`'s addresses and routes for `ifname` inside `netns_path`."""
    mine = []
    for entry in result.ips:
        index = entry.get("interface")
        if index is None:
            continue
        if index >= len(result.interfaces) or result.interfaces[index]["name"] != ifname:
            raise CNIError(
                INTERNAL,
                f'failed to add IP addr {entry["address"]} to "{ifname}": invalid interface index',
            )
        mine.append(entry)
    wants_v6 = any(ipaddress.ip_interface(e["address"]).version == 6 for e in mine)
    if wants_v6:
        with netns.entered(netns_path):
            _enable_ipv6(ifname)
    with netlink.session(netns_path) as ipr:
        index = netlink.link_index(ipr, ifname)
        if index is None:
            raise CNIError(INTERNAL, f'failed to lookup "{ifname}": link not found')
        for entry in mine:
            iface = ipaddress.ip_interface(entry["address"])
            try:
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            except Exception as err:
                if getattr(err, "code", None) != 17:  # EEXIST: already configured is fine
                    raise CNIError(
                        INTERNAL, f'failed to add IP addr {entry["address"]} to "{ifname}": {err}'
                    ) from None
        netlink.set_link_state(ipr, index, up=True)
        gateways = {4: None, 6: None}
        for entry in result.ips:
            if entry.get("gateway"):
                version = ipaddress.ip_address(entry["gateway"]).version
                gateways[version] = gateways[version] or entry["gateway"]
        if gateways[6] is not None and wants_v6:
            _wait_for_dad(ipr, index, ifname)
        for route in result.routes:
            dst = ipaddress.ip_network(route["dst"], strict=False)
            gateway = route.get("gw") or gateways[dst.version]
            # proto boot (3) is what upstream's netlink library leaves on routes it adds.
            spec = {
                "dst": str(dst.network_address),
                "dst_len": dst.prefixlen,
                "oif": index,
                "proto": 3,
            }
            if gateway:
                spec["gateway"] = gateway
            if route.get("priority"):
                spec["priority"] = route["priority"]
            if route.get("table") is not None:
                spec["table"] = route["table"]
            if route.get("scope") is not None:
                spec["scope"] = route["scope"]
            try:
                ipr.route("append", family=2 if dst.version == 4 else 10, **spec)
            except Exception as err:
                if getattr(err, "code", None) == 17:
                    continue
                raise CNIError(
                    INTERNAL, f"failed to add route '{_route_text(route, gateway, ifname)}': {err}"
                ) from None
