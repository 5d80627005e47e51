"""The kernel side of vrf, inside the container netns: find or create the VRF device, enslave
the container interface to it, and put back what enslaving takes away.

Enslaving cycles the interface down and up: the kernel moves its connected and local routes
into the VRF's table itself, but drops its universe-scope routes (a default via the gateway,
IPAM routes) and, unless keep_addr_on_down is set, its global IPv6 addresses. Like upstream
(plugins/meta/vrf, after 1.1.1), the routes are saved before and re-created in the VRF table,
and the addresses are re-added, waiting for their local route to show up in that table.
"""

import time

from libcni.kernel.rtnl import AF_INET6, Link
from libcni.kernel.rules import RT_SCOPE_UNIVERSE, TableSocket, table_socket, vrf_data, vrf_table
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import internal

MAX_TABLE = 2**32 - 1
# Upstream's wait for a re-added IPv6 address: 10 ms doubling, 9 tries, ~2.5 s in all.
ADDRESS_WAIT_STEPS = tuple(0.01 * 2**n for n in range(8))


def open_session(netns_path: str) -> Session:
    """The container's session, speaking routes of any table too (rules.TableSocket)."""
    return Session(netns_path, socket_class=TableSocket)


def existing_session(netns_path: str) -> Session | None:
    """open_session for DEL: None when the netns (and the VRF with it) is gone."""
    return Session.existing(netns_path, socket_class=TableSocket)


def find_vrf(container: Session, name: str) -> Link | None:
    link = container.link(name)
    if link is not None and link.kind != "vrf":
        raise internal(f"Netlink {name} is not a VRF")
    return link


def first_free_table(container: Session) -> int:
    """The lowest table id from 1 that no VRF in this netns uses (upstream's rule)."""
    taken = {vrf_table(link) for link in container.links()}
    table = 1
    while table in taken:
        table += 1
    if table > MAX_TABLE:
        raise internal("findFreeRoutingTableID: Failed to find an available routing id")
    return table


def create_vrf(container: Session, name: str, table: int, undo) -> Link:
    table = table or first_free_table(container)
    try:
        container.create_link(name, "vrf", data=vrf_data(table))
    except OSError as err:
        hint = "this kernel has no VRF support (module vrf)" if err.errno == 95 else ""
        raise internal(f"could not add VRF {name}: {strerror(err)}", hint) from None
    vrf = container.require(name, f"could not add VRF {name}: it vanished right after creation")
    undo.push(container.delete_link, vrf)
    container.set_link(vrf, f"could not set link up for VRF {name}", up=True)
    return vrf


def require_link(container: Session, ifname: str) -> Link:
    return container.require(ifname, f"could not get link by name {ifname}")


def _global_ipv6(container: Session, link: Link) -> list:
    addresses = table_socket(container).link_addresses(link.index, AF_INET6)
    return [a for a in addresses if a.scope == RT_SCOPE_UNIVERSE]


def _wait_for_local_route(container: Session, address, link: Link, table: int):
    wanted = f"{address.address}/128"
    for pause in (*ADDRESS_WAIT_STEPS, None):
        routes = table_socket(container).all_routes(AF_INET6)
        if any(r.dst == wanted and r.table == table and r.oif == link.index for r in routes):
            return
        if pause is None:
            raise internal(
                f"failed getting local/host addresses for {link.name} in table {table} "
                f"with dst {address.address}/{address.prefixlen}"
            )
        time.sleep(pause)


def _restore(container: Session, link: Link, addresses: list, routes: list, table=None) -> None:
    """Re-add what is missing of `addresses`, then re-create `routes` (in `table`)."""
    present = set(_global_ipv6(container, link))
    for address in addresses:
        if address not in present:
            table_socket(container).put_address(address)
    for route in routes:
        table_socket(container).put_route(route, table)


def enslave(container: Session, vrf: Link, link: Link, undo) -> None:
    if link.master:
        master = container.link_by_index(link.master)
        name = master.name if master is not None else f"#{link.master}"
        raise internal(f"interface {link.name} has already a master set: {name}")
    table = vrf_table(vrf)
    if table is None:
        raise internal(f"{vrf.name} is not a VRF (it has no routing table)")
    rtnl = table_socket(container)
    addresses = _global_ipv6(container, link)
    routes = [r for r in rtnl.link_routes(link.index) if r.scope == RT_SCOPE_UNIVERSE]
    undo.push(_restore, container, link, addresses, routes)  # back in main if we fail later
    container.set_link(
        link, f"could not set vrf {vrf.name} as master of {link.name}", master=vrf.index
    )
    undo.push(container.set_link, link, f"could not reset master of {link.name}", master=0)
    present = set(_global_ipv6(container, link))
    for address in addresses:
        if address in present:
            continue
        try:
            rtnl.put_address(address)
        except OSError as err:
            raise internal(
                f"could not restore address {address.address}/{address.prefixlen} to "
                f"{link.name} @ {vrf.name}: {strerror(err)}"
            ) from None
        _wait_for_local_route(container, address, link, table)
    for route in routes:
        try:
            rtnl.put_route(route, table)
        except OSError as err:
            raise internal(f"could not add route '{route.dst}': {strerror(err)}") from None


def slaves(container: Session, vrf: Link) -> list:
    return [link for link in container.links() if link.master == vrf.index]


def release(container: Session, vrf: Link, link: Link | None) -> None:
    """DEL: take the interface out of the VRF (if it is in it), and remove the VRF when that
    was its last slave. A missing interface is not an error (upstream's DEL fails there)."""
    if link is not None and link.master == vrf.index:
        failure = f"resetMaster: could not reset master of {link.name}"
        container.set_link(link, failure, master=0)
    if not slaves(container, vrf):
        # False (ENODEV) when a concurrent DEL removed it first.
        container.delete_link(vrf, f"could not delete VRF {vrf.name}")
