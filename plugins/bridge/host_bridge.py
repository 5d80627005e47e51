"""The host side of the bridge plugin: the bridge itself, its ports, VLANs and gateway address.

All of it happens in the netns the plugin runs in (the node's). Creating the bridge tolerates
EEXIST, so any number of concurrent ADDs racing to create it all succeed.
"""

import errno
import ipaddress
import time

from libcni.kernel import links, sysctl
from libcni.kernel.rtnl import Link, RouteSocket
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError

IFF_PROMISC = 0x100
# Waits for the host port to come up, in milliseconds: upstream waits 0, 50, 500, 1000, 1000;
# the same total, polled finer at first, since the port is usually up within a few ms.
PORT_UP_WAITS = (0, 2, 5, 10, 33, 500, 1000, 1000)


def ensure_bridge(
    host: Session,
    name: str,
    *,
    mtu: int = 0,
    promisc: bool = False,
    vlan_filtering: bool = False,
    undo=None,
) -> Link:
    """The bridge `name`, created if missing (MTU and VLAN filtering apply only then), up.
    A bridge this call created is removed again by `undo` if the ADD fails and no port joined."""
    created = False
    try:
        host.rtnl.add_link(name, "bridge", mtu=mtu, data=RouteSocket.bridge_data(vlan_filtering))
        created = True
    except OSError as err:
        if err.errno != errno.EEXIST:
            details = ""
            if vlan_filtering and err.errno == errno.EOPNOTSUPP:
                details = "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)"
            raise CNIError(
                INTERNAL,
                f'failed to create bridge "{name}": could not add "{name}": {strerror(err)}',
                details,
            ) from None
    bridge = host.require(name, f'could not lookup "{name}": link not found')
    if bridge.kind != "bridge":
        raise CNIError(
            INTERNAL,
            f'"{name}" already exists but is not a bridge',
            f'it is a {bridge.kind or "device without a kind"} link; pick another "bridge" name',
        )
    if created and undo is not None:
        undo.push(_delete_if_unused, host, bridge)
    if promisc and not bridge.flags & IFF_PROMISC:
        host.set_link(bridge, f'could not set promiscuous mode on "{name}"', promisc=True)
    with host.inside():
        links.write_best_effort([(sysctl.iface_key("ipv6", name, "accept_ra"), "0")])
    if not bridge.up:
        host.set_link(bridge, f'could not set "{name}" up', up=True)
    return bridge


def _delete_if_unused(host: Session, bridge: Link) -> None:
    import os

    try:
        ports = os.listdir(f"/sys/class/net/{bridge.name}/brif")
    except OSError:
        return
    if not ports:  # another ADD may have joined it meanwhile: then it stays
        host.delete_link(bridge)


def attach_port(
    host: Session,
    bridge: Link,
    port: Link,
    *,
    hairpin: bool = False,
    isolated: bool = False,
    vlan: int = 0,
    trunk: list | None = None,
    preserve_default_vlan: bool = False,
) -> None:
    """Enslave host link `port` to `bridge` and set its port flags and VLANs as upstream."""
    host.set_link(
        port, f'failed to connect "{port.name}" to bridge {bridge.name}', master=bridge.index
    )
    host.set_link(
        port,
        f"failed to setup hairpin mode for {port.name}",
        port_data=RouteSocket.bridge_port_data(hairpin=hairpin, isolated=isolated),
    )
    if vlan or trunk:
        from plugins.bridge import port_vlans

        port_vlans.configure(host, port, vlan, trunk or [], preserve_default_vlan)


def wait_port_up(host: Session, port: Link) -> None:
    """The host end must reach oper-state UP (the bridge port left the blocking states)."""
    for wait_ms in PORT_UP_WAITS:
        time.sleep(wait_ms / 1000)
        if host.refresh(port).operstate == "UP":
            return
    raise CNIError(INTERNAL, f"bridge port in error state: {port.operstate.lower()}")


def ensure_address(host: Session, device: Link, gateway: str, prefixlen: int, force: bool) -> None:
    """Put `gateway/prefixlen` on `device` (the bridge or its VLAN gateway veth).

    An IPv4 bridge has one address: a different one is an error unless `force` replaces it;
    an IPv6 address that overlaps the new one is treated the same way. After a change the
    bridge MAC is set to its current value: that pins it, so ports joining later do not
    change it under the containers' neighbour caches.
    """
    wanted = ipaddress.ip_interface(f"{gateway}/{prefixlen}")
    family = 2 if wanted.version == 4 else 10
    host.refresh(device)  # the MAC to pin is the one it has now, after ports joined
    for address, length, _ in host.address_flags(device, family):
        have = ipaddress.ip_interface(f"{address}/{length}")
        if have == wanted:
            return
        overlaps = wanted.ip in have.network or have.ip in wanted.network
        if wanted.version == 6 and not overlaps or have.ip.is_link_local:
            continue
        if not force:
            raise CNIError(
                INTERNAL,
                f'"{device.name}" already has an IP address different from {wanted}',
                f'it has {have}; set "forceAddress": true to replace it, or give this '
                "network a different bridge or subnet",
            )
        try:
            host.delete_address(device, address, length)
        except OSError as err:
            raise CNIError(
                INTERNAL, f'could not remove IP address from "{device.name}": {strerror(err)}'
            ) from None
    try:
        host.add_address(device, str(wanted.ip), prefixlen)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise CNIError(
                INTERNAL,
                f'could not add IP address {wanted} to "{device.name}": {strerror(err)}',
            ) from None
    host.set_link(device, "could not set bridge's mac", mac=device.mac)


def plan_gateways(result, is_gateway: bool, is_default_gateway: bool) -> dict:
    """Upstream's calcGateways: point every IP at the container interface (index 2), fill a
    missing gateway with the subnet's first host when the bridge is the gateway, add one
    default route per family for isDefaultGateway unless IPAM already routes 0/0 via a gateway.
    Returns {4: [(gateway, prefixlen)], 6: [...]}: the addresses the bridge must carry.
    """
    gateways: dict = {4: [], 6: []}
    has_default = {4: False, 6: False}
    for entry in result.ips:
        iface = ipaddress.ip_interface(entry["address"])
        version = iface.version
        entry["interface"] = 2
        if not entry.get("gateway") and is_gateway:
            entry["gateway"] = str(iface.network.network_address + 1)
        if is_default_gateway and not has_default[version]:
            zero = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
            if not any(
                r.get("gw") and ipaddress.ip_network(r["dst"], strict=False) == zero
                for r in result.routes
            ):
                route = {"dst": str(zero)}
                if entry.get("gateway"):
                    route["gw"] = entry["gateway"]
                result.routes.append(route)
            has_default[version] = True
        if is_gateway:
            gateways[version].append((entry["gateway"], iface.network.prefixlen))
    return gateways


def ensure_vlan_gateway(
    host: Session, bridge: Link, vlan: int, preserve_default_vlan: bool
) -> Link:
    """The `<bridge>.<vlan>` veth that carries the gateway of an access-VLAN network: its peer
    is a bridge port untagged in that VLAN. Made once, shared by every container."""
    from libcni.kernel import veth

    name = f"{bridge.name}.{vlan}"
    link = host.link(name)
    if link is None:
        # Both ends live here: `name` plays the container end, the random peer is the port.
        host.refresh(bridge)  # its MTU follows the ports that joined since it was read
        port, link = veth.create(host, host, name, mtu=bridge.mtu)
        attach_port(host, bridge, port, vlan=vlan, preserve_default_vlan=preserve_default_vlan)
        links.set_up(host, link)
    return link


# -- CHECK ---------------------------------------------------------------------------------


def check_bridge(host: Session, result, bridge: str, promisc: bool) -> Link:
    """The prevResult's bridge entry still matches the kernel's bridge; returns the bridge."""
    entry = next((i for i in result.interfaces if i.get("name") == bridge), None)
    if entry is None:
        raise CNIError(INTERNAL, f"CNI created bridge {bridge} in host namespace was not found")
    link = host.require(bridge, f"Error: Bridge interface {bridge} not found")
    if link.kind != "bridge":
        raise CNIError(INTERNAL, f"Error: Bridge interface {bridge} not of type bridge")
    if entry.get("mac") and entry["mac"].lower() != link.mac.lower():
        raise CNIError(INTERNAL, f"Bridge interface {bridge} Mac doesn't match: {entry['mac']}")
    if bool(link.flags & IFF_PROMISC) != promisc:
        raise CNIError(
            INTERNAL,
            f"Bridge interface {bridge} promiscuous mode is {'off' if promisc else 'on'}, "
            f"config wants it {'on' if promisc else 'off'}",
        )
    return link


def check_host_port(host: Session, result, bridge: Link, container_link: Link) -> None:
    """Some host veth of the prevResult is the container veth's peer and a port of `bridge`."""
    for entry in result.interfaces:
        name = entry.get("name", "")
        if entry.get("sandbox") or name == bridge.name:
            continue
        link = host.link(name)
        if link is None or link.kind != "veth" or link.index != container_link.peer:
            continue
        if link.master != bridge.index:
            raise CNIError(INTERNAL, f"Interface {link.name} is not a port of bridge {bridge.name}")
        return
    raise CNIError(INTERNAL, f"CNI veth created for bridge {bridge.name} was not found")
