"""Netlink sessions bound to a network namespace, and the small link/address helpers plugins share.

A netlink socket belongs to the netns it was created in, so `session(path)` opens the socket
inside the target netns and the caller works from its own namespace afterwards. pyroute2 is
imported here, lazily, by the verbs that touch the kernel; VERSION never pays for it.
"""

from contextlib import contextmanager

from libcni.kernel import netns


def open_route_socket(netns_path: str | None = None):
    """A pyroute2 IPRoute whose socket lives in `netns_path` (or in the current netns)."""
    from pyroute2 import IPRoute

    if not netns_path:
        return IPRoute()
    with netns.entered(netns_path):
        return IPRoute()


@contextmanager
def session(netns_path: str | None = None):
    ipr = open_route_socket(netns_path)
    try:
        yield ipr
    finally:
        ipr.close()


def link_index(ipr, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_is_up(ipr, index: int) -> bool:
    link = ipr.get_links(index)[0]
    return bool(link["flags"] & 1)  # IFF_UP


def set_link_state(ipr, index: int, up: bool) -> None:
    ipr.link("set", index=index, state="up" if up else "down")


def link_addresses(ipr, index: int) -> list:
    """Every address on a link as "ip/prefix", IPv4 first (kernel order within a family)."""
    addresses = []
    for family in (2, 10):  # AF_INET, AF_INET6
        for msg in ipr.get_addr(index=index, family=family):
            addresses.append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
    return addresses
