"""Configuring a container interface from an IPAM result (upstream's ipam.ConfigureIface).

Inside the container netns: enable IPv6 where needed, add the addresses that point at this
interface, bring it up, wait for IPv6 duplicate address detection when a v6 gateway will be
used, then add the routes (gateway from the route, else the first gateway of the same family).
"""

import errno
import ipaddress
import time

from libcni.kernel import netns, sysctl
from libcni.kernel.links import strerror
from libcni.kernel.rtnl import RouteSocket
from libcni.protocol.errors import INTERNAL, CNIError

DAD_POLL = 0.05  # upstream's interval; we start at 5 ms and double up to it
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


def _wait_for_dad(sock, index: int, ifname: str) -> None:
    deadline = time.monotonic() + DAD_TIMEOUT
    pause = 0.005
    while True:
        tentative = False
        for address, _, flags in sock.address_flags(index, 10):
            if flags & IFA_F_DADFAILED:
                raise CNIError(
                    INTERNAL,
                    f"IPv6 duplicate address detection failed on {ifname} for {address}",
                )
            if flags & IFA_F_TENTATIVE:
                tentative = True
        if not tentative:
            return
        if time.monotonic() > deadline:
            link = sock.link(ifname)
            if link is not None and link.operstate == "UP":
                raise CNIError(
                    INTERNAL,
                    f"timed out waiting for IPv6 addresses on {ifname} "
                    "to leave the tentative state",
                )
            return
        time.sleep(pause)
        pause = min(pause * 2, DAD_POLL)


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
    with RouteSocket(netns_path) as sock:
        link = sock.link(ifname)
        if link is None:
            raise CNIError(INTERNAL, f'failed to lookup "{ifname}": link not found')
        for entry in mine:
            iface = ipaddress.ip_interface(entry["address"])
            try:
                sock.add_address(link.index, str(iface.ip), iface.network.prefixlen)
            except OSError as err:
                if err.errno != errno.EEXIST:  # already configured is fine
                    raise CNIError(
                        INTERNAL,
                        f'failed to add IP addr {entry["address"]} to "{ifname}": {strerror(err)}',
                    ) from None
        sock.set_link(link.index, up=True)
        gateways = {4: None, 6: None}
        for entry in result.ips:
            if entry.get("gateway"):
                version = ipaddress.ip_address(entry["gateway"]).version
                gateways[version] = gateways[version] or entry["gateway"]
        if gateways[6] is not None and wants_v6:
            _wait_for_dad(sock, link.index, ifname)
        for route in result.routes:
            dst = ipaddress.ip_network(route["dst"], strict=False)
            gateway = route.get("gw") or gateways[dst.version]
            extra: dict = {}
            if route.get("priority"):
                extra["priority"] = route["priority"]
            if route.get("table") is not None:
                extra["table"] = route["table"]
            if route.get("scope") is not None:
                extra["scope"] = route["scope"]
            try:
                sock.route(
                    "add",
                    str(dst.network_address),
                    dst.prefixlen,
                    oif=link.index,
                    gateway=gateway or "",
                    **extra,
                )
            except OSError as err:
                if err.errno == errno.EEXIST:
                    continue
                raise CNIError(
                    INTERNAL,
                    f"failed to add route '{_route_text(route, gateway, ifname)}': {strerror(err)}",
                ) from None


def configure_allocation(netns_path: str, ifname: str, result, allocated, announce=None) -> None:
    """Take the IPAM's addresses (for the result's interface 0) and routes into `result`, run
    `announce()` (gratuitous ARP/NA) if given, then configure the container interface."""
    result.ips = [dict(ip, interface=0) for ip in allocated.ips]
    result.routes = allocated.routes
    if announce is not None:
        announce()
    configure(netns_path, ifname, result)
