"""veth pairs for bridge and ptp (upstream's ip.SetupVeth): the container end is created inside
the container netns under CNI_IFNAME, its peer is born directly in the host netns (the one the
plugin runs in) under a random `vethXXXXXXXX` name. Spoken through libcni.kernel.rtnl: this runs on
every ADD and must not pay for pyroute2.
"""

import errno
import os

from libcni.kernel import links, netns, sysctl
from libcni.kernel.rtnl import RouteSocket
from libcni.protocol.errors import INTERNAL, CNIError

NAME_ATTEMPTS = 10


def create(netns_path: str, ifname: str, *, mtu: int = 0, mac: str = "", host_name: str = ""):
    """Make the pair; returns (host entry, container entry) as result interface dicts.

    A clash of the random host name is retried (10 attempts, like upstream); a clash of the
    container name is an error the operator can act on. The host end is up, the container end
    is left down for ConfigureIface.
    """
    host_fd = os.open(netns.current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        with RouteSocket(netns_path) as inside:
            for _ in range(NAME_ATTEMPTS):
                peer = host_name or links.temp_name()
                if _make_pair(inside, ifname, peer, host_fd, mtu, mac):
                    break
                if host_name or inside.link(ifname) is not None:
                    where = "host" if host_name else "container"
                    raise CNIError(
                        INTERNAL,
                        f'container veth name ("{ifname}") peer provided ("{peer}") already exists',
                        f'an interface named "{peer if host_name else ifname}" already exists '
                        f"in the {where} netns",
                    )
            else:
                raise CNIError(INTERNAL, "failed to find a unique veth name")
            container = inside.link(ifname)
    finally:
        os.close(host_fd)
    with RouteSocket() as here:
        host = links.require(here, peer, f'failed to lookup "{peer}" in the host netns')
        links.change(here, host.index, f'set "{peer}" up', state="up")
    # Router advertisements arriving on a host port must not configure the host.
    try:
        sysctl.write(sysctl.iface_key("ipv6", peer, "accept_ra"), "0")
    except OSError:
        pass
    return (
        {"name": peer, "mac": host.mac},
        {"name": ifname, "mac": container.mac if container else "", "sandbox": netns_path},
    )


def _make_pair(sock, ifname: str, peer: str, host_fd: int, mtu: int, mac: str) -> bool:
    """False on EEXIST (either name taken); other failures are errors."""
    try:
        sock.add_link(
            ifname,
            "veth",
            mtu=mtu,
            mac=mac,
            peer=RouteSocket.veth_peer(peer, netns_fd=host_fd, mtu=mtu),
        )
    except OSError as err:
        if err.errno == errno.EEXIST:
            return False
        raise CNIError(INTERNAL, f"failed to make veth pair: {links.strerror(err)}") from None
    return True


def delete_collecting_addresses(netns_path: str, ifname: str) -> list | None:
    """Delete the container end (its peer goes with it); return its global addresses as
    "ip/prefix" strings, [] when the link was already gone, None when the netns is gone."""
    if not netns.exists(netns_path):
        return None
    try:
        with RouteSocket(netns_path) as sock:
            link = sock.link(ifname) if len(ifname.encode()) <= 15 else None
            if link is None:
                return []
            found = [a for a in sock.addresses(link.index) if _is_global(a)]
            sock.delete_link(link.index)
    except netns.NetnsMissing:
        return None
    except OSError as err:
        if err.errno == errno.ENODEV:
            return []
        raise CNIError(INTERNAL, f'failed to delete "{ifname}": {links.strerror(err)}') from None
    return found


def global_addresses(netns_path: str, ifname: str) -> list:
    """The container end's global addresses ("ip/prefix"); [] when the link or netns is gone."""
    if not netns_path or not netns.exists(netns_path):
        return []
    try:
        with RouteSocket(netns_path) as sock:
            link = sock.link(ifname) if len(ifname.encode()) <= 15 else None
            return [a for a in sock.addresses(link.index) if _is_global(a)] if link else []
    except (netns.NetnsMissing, OSError):
        return []


def _is_global(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_interface(address).ip
    return not (ip.is_link_local or ip.is_loopback or ip.is_multicast)
