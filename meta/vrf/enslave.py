"""The kernel side of vrf, inside the container netns: find or create the VRF device, enslave
the container interface to it, and put back what enslaving takes away.

Enslaving cycles the interface down and up: the kernel moves its connected and local routes
into the VRF's table itself, but drops its universe-scope routes (a default via the gateway,
IPAM routes) and, unless keep_addr_on_down is set, its global IPv6 addresses. Like upstream
(plugins/meta/vrf, after 1.1.1), the routes are saved before and re-created in the VRF table,
and the addresses are re-added, waiting for their local route to show up in that table.
"""

import time

from libcni.kernel.links import strerror
from libcni.kernel.rtnl import AF_INET6, Link
from libcni.kernel.rules import RT_SCOPE_UNIVERSE, TableSocket, vrf_data, vrf_table
from libcni.protocol.errors import internal

MAX_TABLE = 2**32 - 1
# Upstream's wait for a re-added IPv6 address: 10 ms doubling, 9 tries, ~2.5 s in all.
ADDRESS_WAIT_STEPS = tuple(0.01 * 2**n for n in range(8))


def find_vrf(sock: TableSocket, name: str) -> Link | None:
    link = sock.link(name)
    if link is not None and link.kind != "vrf":
        raise internal(f"Netlink {name} is not a VRF")
    return link


def first_free_table(sock: TableSocket) -> int:
    """The lowest table id from 1 that no VRF in this netns uses (upstream's rule)."""
    taken = {vrf_table(link) for link in sock.links()}
    table = 1
    while table in taken:
        table += 1
    if table > MAX_TABLE:
        raise internal("findFreeRoutingTableID: Failed to find an available routing id")
    return table


def create_vrf(sock: TableSocket, name: str, table: int, undo) -> Link:
    table = table or first_free_table(sock)
    try:
        sock.add_link(name, "vrf", data=vrf_data(table))
    except OSError as err:
        hint = "this kernel has no VRF support (module vrf)" if err.errno == 95 else ""
        raise internal(f"could not add VRF {name}: {strerror(err)}", hint) from None
    vrf = sock.link(name)
    if vrf is None:
        raise internal(f"could not add VRF {name}: it vanished right after creation")
    undo.push(sock.delete_link, vrf.index)
    try:
        sock.set_up(vrf.index, True)
    except OSError as err:
        raise internal(f"could not set link up for VRF {name}: {strerror(err)}") from None
    return vrf


def _global_ipv6(sock: TableSocket, index: int) -> list:
    return [a for a in sock.link_addresses(index, AF_INET6) if a.scope == RT_SCOPE_UNIVERSE]


def _wait_for_local_route(sock: TableSocket, address, index: int, table: int, ifname: str):
    wanted = f"{address.address}/128"
    for pause in (*ADDRESS_WAIT_STEPS, None):
        routes = sock.all_routes(AF_INET6)
        if any(r.dst == wanted and r.table == table and r.oif == index for r in routes):
            return
        if pause is None:
            raise internal(
                f"failed getting local/host addresses for {ifname} in table {table} "
                f"with dst {address.address}/{address.prefixlen}"
            )
        time.sleep(pause)


def _restore(sock: TableSocket, index: int, addresses: list, routes: list, table=None) -> None:
    """Re-add what is missing of `addresses`, then re-create `routes` (in `table`)."""
    present = set(_global_ipv6(sock, index))
    for address in addresses:
        if address not in present:
            sock.put_address(address)
    for route in routes:
        sock.put_route(route, table)


def enslave(sock: TableSocket, vrf: Link, ifname: str, undo) -> None:
    link = sock.link(ifname)
    if link is None:
        raise internal(f"could not get link by name {ifname}")
    if link.master:
        master = sock.link_by_index(link.master)
        name = master.name if master is not None else f"#{link.master}"
        raise internal(f"interface {ifname} has already a master set: {name}")
    table = vrf_table(vrf)
    if table is None:
        raise internal(f"{vrf.name} is not a VRF (it has no routing table)")
    addresses = _global_ipv6(sock, link.index)
    routes = [r for r in sock.link_routes(link.index) if r.scope == RT_SCOPE_UNIVERSE]
    undo.push(_restore, sock, link.index, addresses, routes)  # back in main if we fail later
    try:
        sock.set_link(link.index, master=vrf.index)
    except OSError as err:
        raise internal(
            f"could not set vrf {vrf.name} as master of {ifname}: {strerror(err)}"
        ) from None
    undo.push(sock.set_link, link.index, master=0)
    present = set(_global_ipv6(sock, link.index))
    for address in addresses:
        if address in present:
            continue
        try:
            sock.put_address(address)
        except OSError as err:
            raise internal(
                f"could not restore address {address.address}/{address.prefixlen} to "
                f"{ifname} @ {vrf.name}: {strerror(err)}"
            ) from None
        _wait_for_local_route(sock, address, link.index, table, ifname)
    for route in routes:
        try:
            sock.put_route(route, table)
        except OSError as err:
            raise internal(f"could not add route '{route.dst}': {strerror(err)}") from None


def slaves(sock: TableSocket, vrf: Link) -> list:
    return [link for link in sock.links() if link.master == vrf.index]


def release(sock: TableSocket, vrf: Link, ifname: str) -> None:
    """DEL: take the interface out of the VRF (if it is in it), and remove the VRF when that
    was its last slave. A missing interface is not an error (upstream's DEL fails there)."""
    link = sock.link(ifname)
    if link is not None and link.master == vrf.index:
        try:
            sock.set_link(link.index, master=0)
        except OSError as err:
            raise internal(
                f"resetMaster: could not reset master of {ifname}: {strerror(err)}"
            ) from None
    if not slaves(sock, vrf):
        try:
            sock.delete_link(vrf.index)
        except OSError as err:
            if err.errno != 19:  # ENODEV: a concurrent DEL removed it first
                raise internal(f"could not delete VRF {vrf.name}: {strerror(err)}") from None
