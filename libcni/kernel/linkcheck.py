"""CHECK comparisons the main plugins share: the prevResult's interface, addresses and routes
against what the container netns really holds."""

import ipaddress

from libcni.kernel import links
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session
from libcni.protocol.errors import INTERNAL, CNIError

MAIN_TABLE = 254
AF_INET, AF_INET6 = 2, 10


def container_interface(result, ifname: str, netns_path: str) -> dict:
    """The prevResult entry for our interface: name CNI_IFNAME and sandbox CNI_NETNS."""
    for entry in result.interfaces:
        if entry.get("name") == ifname and entry.get("sandbox") == netns_path:
            return entry
    raise CNIError(
        INTERNAL,
        f"Sandbox in prevResult doesn't match configured netns: {netns_path}",
        f'prevResult has no interface "{ifname}" with sandbox "{netns_path}"',
    )


def check_interface(container: Session, entry: dict, kind: str | None) -> Link:
    """Our interface exists in the container, is a `kind` link and has the recorded MAC.

    Returns the rtnl.Link; plugins that also compare kind-specific data (a macvlan's mode)
    read it with links.kind_data()."""
    name = entry.get("name", "")
    link = container.link(name)
    if link is None:
        raise CNIError(INTERNAL, f"Container Interface name in prevResult: {name} not found")
    if kind is not None and link.kind != kind:
        raise CNIError(
            INTERNAL,
            f"Error: Container interface {name} not of type {kind}",
            f"it is a {link.kind or 'device without a kind'} link",
        )
    mac = entry.get("mac")
    if mac and mac.lower() != link.mac.lower():
        raise CNIError(
            INTERNAL, f"Interface {name} Mac {mac} doesn't match container Mac: {link.mac}"
        )
    return link


def _ips_for(result, ifname: str) -> list:
    ours = []
    for entry in result.ips:
        index = entry.get("interface")
        if index is None or (
            0 <= index < len(result.interfaces) and result.interfaces[index]["name"] == ifname
        ):
            ours.append(entry)
    return ours


def check_addresses(container: Session, link: Link, result, connected_route: bool = True) -> None:
    """Every prevResult address of our interface is on it, with its subnet route."""
    ifname = link.name
    present = set(container.addresses(link))
    routes = _route_set(container) if connected_route else set()
    for entry in _ips_for(result, ifname):
        iface = ipaddress.ip_interface(entry["address"])
        if f"{iface.ip}/{iface.network.prefixlen}" not in present:
            raise CNIError(
                INTERNAL, f"Failed to match addr {entry['address']} on interface {ifname}"
            )
        if connected_route and (str(iface.network), MAIN_TABLE) not in {r[:2] for r in routes}:
            raise CNIError(
                INTERNAL,
                f"Failed to find Gateway {entry.get('gateway', '')} for interface {ifname}",
                f"no route to {iface.network} in the container",
            )


def _route_set(sock: Session) -> set:
    """(dst, table, gateway) of every route in the netns; multipath hops each count."""
    found = set()
    for family in (AF_INET, AF_INET6):
        for dst, table, gateways in sock.routes(family):
            dst = str(ipaddress.ip_network(dst, strict=False))
            for gateway in gateways:
                found.add((dst, table, str(ipaddress.ip_address(gateway)) if gateway else None))
    return found


def check_routes(container: Session, routes: list) -> None:
    """Every prevResult route exists in its table (main unless it names one)."""
    if not routes:
        return
    present = _route_set(container)
    for route in routes:
        dst = str(ipaddress.ip_network(route["dst"], strict=False))
        table = route.get("table") or MAIN_TABLE
        gateway = route.get("gw")
        if gateway and ipaddress.ip_address(gateway).is_unspecified:
            gateway = None  # "via 0.0.0.0" (dhcp's on-link routes) is stored without a gateway
        if gateway:
            ok = (dst, table, str(ipaddress.ip_address(gateway))) in present
        else:
            ok = any(r[0] == dst and r[1] == table for r in present)
        if not ok:
            text = dst + (f" via {gateway}" if gateway else "")
            raise CNIError(INTERNAL, f"Expected Route {text} not found in routing table")


def check_attachment(
    call,
    kind: str | None,
    *,
    missing: str = "Required prevResult missing",
    settings: dict | None = None,
    extra=None,
    addresses: bool = True,
    connected_route: bool = True,
    routes: bool = True,
    container_link: bool = True,
    container: Session | None = None,
):
    """CHECK of a main plugin's one container link against its prevResult (required; upstream's
    `missing` text differs per plugin): the interface (of link `kind`, None for any), its kind
    `settings` ({IFLA_* name: (expected, message(actual))}), `extra(previous, link)` for what
    else only that plugin checks, then addresses and routes. `container` is the caller's
    session on CNI_NETNS, if it has one; otherwise one is opened for the check."""
    previous = call.chained_result(missing)
    if not container_link:
        return previous
    entry = container_interface(previous, call.ifname, call.netns)
    if container is None:
        with Session(call.netns) as opened:
            _check_link(
                opened, previous, entry, kind, settings, extra, addresses, connected_route, routes
            )
    else:
        _check_link(
            container, previous, entry, kind, settings, extra, addresses, connected_route, routes
        )
    return previous


def _check_link(
    container, previous, entry, kind, settings, extra, addresses, connected_route, routes
):
    link = check_interface(container, entry, kind)
    if settings:
        present = links.kind_data(link)
        for key, (expected, message) in settings.items():
            if present.get(key) != expected:
                raise CNIError(INTERNAL, message(present.get(key)))
    if extra is not None:
        extra(previous, link)
    if addresses:
        check_addresses(container, link, previous, connected_route)
    if routes:
        check_routes(container, previous.routes)
