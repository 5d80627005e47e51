"""The kernel side of sbr: rules `from <ip> lookup <table>` and the interface's routes copied
into that table, inside the container netns, one sbr at a time per netns.

The steps and their order are upstream's (plugins/meta/sbr): tables are picked from 100 up,
one per IP; every route of the interface in main whose source or gateway is in the IP's subnet
(or that has neither) is copied into the IP's table; then the interface's routes leave main
(or, with addSourceHints, subnet routes stay there with a `src` hint). One difference: a table
that already holds routes counts as taken too (upstream looks only at rules and main).
"""

import fcntl
import ipaddress

from libcni.kernel.rtnl import Link
from libcni.kernel.rules import (
    RT_SCOPE_LINK,
    TableSocket,
    first_free_table,
    table_socket,
    tables_in_use,
)
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import internal

FIRST_TABLE = 100
RESERVED_TABLES = (0, 253, 254, 255)  # unspec, default, main, local: never emptied by DEL


def open_session(netns_path: str) -> Session:
    """The container's session, speaking FIB rules too, holding the sbr lock of its netns:
    flock(2) on the netns file itself, as upstream's filemutex does, so that our sbr and Go's
    serialise with each other on the same netns. Closing the session drops the lock."""
    container = Session(netns_path, socket_class=TableSocket)
    try:
        fcntl.flock(container.netns_fd, fcntl.LOCK_EX)
    except BaseException:
        container.close()
        raise
    return container


def require_link(container: Session, ifname: str) -> Link:
    return container.require(ifname, f"Cannot find network interface {ifname}: Link not found")


def _covers(address: ipaddress.IPv4Interface | ipaddress.IPv6Interface, ip: str | None) -> bool:
    return ip is not None and ipaddress.ip_address(ip) in address.network


def _zero(address) -> str:
    return "0.0.0.0" if address.version == 4 else "::"


def _fail(what: str, err: OSError):
    return internal(f"{what}: {strerror(err)}")


def add_rules_only(container: Session, ips: list, table: int, undo) -> None:
    """With `table` configured: one rule per IP, routes left as they are."""
    rtnl = table_socket(container)
    for ip in ips:
        source = str(ipaddress.ip_interface(ip["address"]).ip)
        try:
            rtnl.add_rule(source, table)
        except OSError as err:
            raise _fail("failed to add rule", err) from None
        undo.push(rtnl.delete_rule_from, source, table)


def source_routes(
    container: Session, link: Link, ips: list, gateways: dict, source_hints: bool, undo
) -> list:
    """Rules, default routes and copied routes, one table per IP; returns the tables used."""
    rtnl = table_socket(container)
    used = tables_in_use(container)
    table = first_free_table(used, FIRST_TABLE)
    main_routes = rtnl.link_routes(link.index)
    tables = []
    for ip in ips:
        address = ipaddress.ip_interface(ip["address"])
        source = str(address.ip)
        try:
            rtnl.add_rule(source, table)
        except OSError as err:
            raise _fail("Failed to add rule", err) from None
        undo.push(rtnl.delete_rule_from, source, table)
        gateway = gateways.get(address.version) or ip.get("gateway")
        if gateway:
            zero = _zero(address)
            try:
                container.route(
                    "add", zero, 0, oif=link.index, gateway=gateway, table=table, append=False
                )
            except OSError as err:
                raise _fail(f"Failed to add default route to {gateway}", err) from None
            undo.push(
                container.route,
                "del",
                zero,
                0,
                oif=link.index,
                gateway=gateway,
                table=table,
                scope=255,
                protocol=0,
            )
        for route in main_routes:
            generic = route.prefsrc is None and route.gateway is None
            if generic or _covers(address, route.prefsrc) or _covers(address, route.gateway):
                try:
                    rtnl.put_route(route, table)
                except OSError as err:
                    raise _fail("Failed to readd route", err) from None
                undo.push(rtnl.drop_route, route, table)
        tables.append(table)
        table = first_free_table(used, table + 1)
    if source_hints:
        _hint_sources(container, link, ips, main_routes, undo)
    else:
        for route in main_routes:
            try:
                rtnl.drop_route(route)
            except OSError as err:
                raise _fail("Failed to delete route", err) from None
            undo.push(rtnl.put_route, route)
    return tables


def _hint_sources(container: Session, link: Link, ips: list, main_routes: list, undo) -> None:
    """addSourceHints: each IP's subnet route stays in main with `src <ip>`, so traffic that
    picks no source still routes by destination; only non-link routes leave main. Failures
    here are warnings, as upstream's."""
    import sys

    rtnl = table_socket(container)
    for ip in ips:
        address = ipaddress.ip_interface(ip["address"])
        network = address.network
        try:
            rtnl.subnet_route(
                link.index, str(network.network_address), network.prefixlen, str(address.ip)
            )
        except OSError as err:
            print(
                f"sbr: could not add subnet route {network} src {address.ip} to main: "
                f"{strerror(err)}",
                file=sys.stderr,
            )
    for route in main_routes:
        if route.scope == RT_SCOPE_LINK:
            continue
        try:
            rtnl.drop_route(route)
        except OSError as err:
            print(f"sbr: could not delete route {route.dst}: {strerror(err)}", file=sys.stderr)
            continue
        undo.push(rtnl.put_route, route)


def tidy(container: Session, link: Link, table: int | None) -> None:
    """DEL: remove every rule (or every rule of `table`) whose source is an address on the
    interface; without `table`, also the interface's routes in the tables those rules used,
    when no other rule points at them."""
    rtnl = table_socket(container)
    rules = rtnl.rules()
    if table is not None:
        rules = [rule for rule in rules if rule.table == table]
    addresses = {entry.split("/")[0] for entry in container.addresses(link)}
    failure = None
    freed = set()
    for rule in rules:
        if rule.src is None or rule.src not in addresses:
            continue
        try:
            rtnl.delete_rule(rule)
            freed.add(rule.table)
        except OSError as err:
            failure = err
    if failure is not None:
        raise _fail("Failed to delete rule", failure)
    if table is not None or not freed:
        return
    freed -= {rule.table for rule in rtnl.rules()} | set(RESERVED_TABLES)
    for route in rtnl.all_routes():
        if route.table in freed and route.oif == link.index:
            try:
                rtnl.drop_route(route)
            except OSError:
                pass  # gone with its link or its address meanwhile


def missing_rules(container: Session, ips: list, table: int | None) -> list:
    """CHECK: the IPs that have no `from <ip>/32 (or /128)` rule (into `table`, if set)."""
    rules = table_socket(container).rules()
    missing = []
    for ip in ips:
        address = ipaddress.ip_interface(ip["address"])
        full = address.max_prefixlen
        if not any(
            rule.src == str(address.ip)
            and rule.src_len == full
            and (table is None or rule.table == table)
            for rule in rules
        ):
            missing.append(str(address.ip))
    return missing
