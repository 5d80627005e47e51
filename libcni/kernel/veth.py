"""veth pairs for bridge and ptp (upstream's ip.SetupVeth): the container end is created inside
the container netns under CNI_IFNAME, its peer is born directly in the host netns under a random
`vethXXXXXXXX` name. Spoken through the kernel sessions of the call: this runs on every ADD and
must not pay for pyroute2.
"""

import errno

from libcni.kernel import links, sysctl
from libcni.kernel.rtnl import Link, RouteSocket
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError

NAME_ATTEMPTS = 10


def create(
    host: Session,
    container: Session,
    ifname: str,
    *,
    mtu: int = 0,
    mac: str = "",
    host_name: str = "",
) -> tuple[Link, Link]:
    """Make the pair; returns (host end, container end).

    A clash of the random host name is retried (10 attempts, like upstream); a clash of the
    container name is an error the operator can act on. The host end is up, the container end
    is left down for ConfigureIface. `container` may be `host` itself (a bridge's VLAN gateway).
    """
    for _ in range(NAME_ATTEMPTS):
        peer = host_name or links.temp_name()
        if _make_pair(container, ifname, peer, host.netns_fd, mtu, mac):
            break
        if host_name or container.link(ifname) is not None:
            where = "host" if host_name else "container"
            raise CNIError(
                INTERNAL,
                f'container veth name ("{ifname}") peer provided ("{peer}") already exists',
                f'an interface named "{peer if host_name else ifname}" already exists '
                f"in the {where} netns",
            )
    else:
        raise CNIError(INTERNAL, "failed to find a unique veth name")
    container_end = container.require(ifname, f'failed to lookup "{ifname}" in the container')
    host_end = host.require(peer, f'failed to lookup "{peer}" in the host netns')
    host.set_link(host_end, f'failed to set "{peer}" up', up=True)
    # Router advertisements arriving on a host port must not configure the host.
    with host.inside():
        links.write_best_effort([(sysctl.iface_key("ipv6", peer, "accept_ra"), "0")])
    return host_end, container_end


def _make_pair(sock: Session, ifname: str, peer: str, host_fd: int, mtu: int, mac: str) -> bool:
    """False on EEXIST (either name taken); other failures are errors."""
    try:
        sock.rtnl.add_link(
            ifname,
            "veth",
            mtu=mtu,
            mac=mac,
            peer=RouteSocket.veth_peer(peer, netns_fd=host_fd, mtu=mtu),
        )
    except OSError as err:
        if err.errno == errno.EEXIST:
            return False
        raise CNIError(INTERNAL, f"failed to make veth pair: {strerror(err)}") from None
    return True


def delete_collecting_addresses(container: Session | None, ifname: str) -> list | None:
    """Delete the container end (its peer goes with it); return its global addresses as
    "ip/prefix" strings, [] when the link was already gone, None when the netns is gone."""
    if container is None:
        return None
    link = container.link(ifname)
    if link is None:
        return []
    try:
        found = [a for a in container.addresses(link) if _is_global(a)]
    except OSError as err:
        if err.errno == errno.ENODEV:
            return []
        raise CNIError(INTERNAL, f'failed to delete "{ifname}": {strerror(err)}') from None
    if not container.delete_link(link):
        return []
    return found


def global_addresses_of(container: Session, link: Link) -> list:
    """The link's global addresses ("ip/prefix")."""
    return [a for a in container.addresses(link) if _is_global(a)]


def global_addresses(netns_path: str, ifname: str) -> list:
    """The container end's global addresses ("ip/prefix"); [] when the link or netns is gone.
    (For callers without a session of their own; opens one.)"""
    try:
        container = Session.existing(netns_path)
        if container is None:
            return []
        with container:
            link = container.link(ifname)
            return global_addresses_of(container, link) if link else []
    except (CNIError, OSError):
        return []


def _is_global(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_interface(address).ip
    return not (ip.is_link_local or ip.is_loopback or ip.is_multicast)
