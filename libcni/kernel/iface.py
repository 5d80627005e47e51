"""Configuring a container interface from an IPAM result (upstream's ipam.ConfigureIface).

Through the container's kernel session: write the caller's sysctls and enable IPv6 where needed
(one entry of the thread into the netns), add the addresses that point at this
interface, bring it up, wait for IPv6 duplicate address detection when a v6 gateway will be
used, then add the routes (gateway from the route, else the first gateway of the same family).
"""

import errno
import ipaddress
import time

from libcni.kernel import sysctl
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
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


def _wait_for_dad(container: Session, link: Link) -> None:
    ifname = link.name
    deadline = time.monotonic() + DAD_TIMEOUT
    pause = 0.005
    while True:
        tentative = False
        for address, _, flags in container.address_flags(link, 10):
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
            if container.refresh(link).operstate == "UP":
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


def configure(container: Session, link: Link, result, settings=()) -> None:
    """Apply `result`'s addresses and routes for `link` in the container, after writing the
    (key, value) sysctls of `settings` (best effort: gratuitous ARP, DAD) in the same entry."""
    ifname = link.name
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
    if settings or wants_v6:
        from libcni.kernel.links import write_best_effort

        with container.inside():
            write_best_effort(settings)
            if wants_v6:
                _enable_ipv6(ifname)
    for entry in mine:
        iface = ipaddress.ip_interface(entry["address"])
        try:
            container.add_address(link, str(iface.ip), iface.network.prefixlen)
        except OSError as err:
            if err.errno != errno.EEXIST:  # already configured is fine
                raise CNIError(
                    INTERNAL,
                    f'failed to add IP addr {entry["address"]} to "{ifname}": {strerror(err)}',
                ) from None
    container.set_link(link, f'failed to set "{ifname}" up', up=True)
    gateways = {4: None, 6: None}
    for entry in result.ips:
        if entry.get("gateway"):
            version = ipaddress.ip_address(entry["gateway"]).version
            gateways[version] = gateways[version] or entry["gateway"]
    if gateways[6] is not None and wants_v6:
        _wait_for_dad(container, link)
    for route in result.routes:
        _add_route(container, link, route, gateways)


def _add_route(container: Session, link: Link, route: dict, gateways: dict) -> None:
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
        container.route(
            "add",
            str(dst.network_address),
            dst.prefixlen,
            oif=link.index,
            gateway=gateway or "",
            **extra,
        )
    except OSError as err:
        if err.errno == errno.EEXIST:
            return
        raise CNIError(
            INTERNAL,
            f"failed to add route '{_route_text(route, gateway, link.name)}': {strerror(err)}",
        ) from None


def configure_allocation(container: Session, link: Link, result, allocated, settings=()) -> None:
    """Take the IPAM's addresses (for the result's interface 0) and routes into `result`, then
    configure the container interface (writing `settings` first)."""
    result.ips = [dict(ip, interface=0) for ip in allocated.ips]
    result.routes = allocated.routes
    configure(container, link, result, settings)
