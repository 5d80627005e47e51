"""Links the main plugins make, find and remove: upstream's pkg/ip link helpers and the
per-plugin create/rename steps (create in a temporary name, rename, so a clash never leaves a
half-made link), deletion that tolerates a gone netns or link, and STATUS's master check.

Everything works on netns paths: an rtnetlink socket (libcni.kernel.rtnl.RouteSocket) is opened
inside the namespace that holds the link, so the calling thread stays in its own netns. No
pyroute2 here: these run on every ADD and DEL. MACs are in macaddr, CHECK in linkcheck.
"""

import errno
import os

from libcni.kernel import netns, sysctl
from libcni.kernel.rtnl import Link, RouteSocket
from libcni.protocol.errors import INTERNAL, PLUGIN_NOT_AVAILABLE, CNIError

MAIN_TABLE = 254
AF_INET, AF_INET6 = 2, 10
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000

# Kernel modules behind the link kinds, for "operation not supported" hints.
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy"}


# -- names and errors -----------------------------------------------------------------------


def temp_name() -> str:
    """A random `vethXXXXXXXX` name (upstream's RandomVethName; NetworkManager ignores veth*)."""
    return "veth" + os.urandom(4).hex()


def error_code(err: BaseException) -> int | None:
    """The errno of an OSError or a pyroute2 NetlinkError."""
    code = getattr(err, "code", None)
    if not isinstance(code, int):
        code = getattr(err, "errno", None)
    return code if isinstance(code, int) else None


def strerror(err: BaseException) -> str:
    """An OS or netlink error worded like Go prints it ("file exists")."""
    code = error_code(err)
    if code and code > 0:
        text = os.strerror(code)
        return text[:1].lower() + text[1:]
    return str(err)


# -- looking links up ----------------------------------------------------------------------


def find(sock, name: str) -> Link | None:
    """The rtnl.Link called `name` in the socket's netns, or None."""
    if not name or len(name.encode()) > 15:
        return None
    try:
        return sock.link(name)
    except OSError as err:
        raise CNIError(INTERNAL, f'failed to look up "{name}": {strerror(err)}') from None


def require(sock, name: str, missing: str) -> Link:
    """The link `name` on `sock`, or a CNIError with the `missing` message."""
    link = sock.link(name)
    if link is None:
        raise CNIError(INTERNAL, missing)
    return link


def lookup_by_mac(netns_path: str | None, mac: str) -> Link | None:
    """The first link (by index) whose MAC is `mac` (canonical form)."""
    with RouteSocket(netns_path) as sock:
        return next((link for link in sock.links() if link.mac.lower() == mac), None)


def where(netns_path: str | None) -> str:
    return f'container netns "{netns_path}"' if netns_path else "host netns"


def lookup(netns_path: str | None, name: str) -> Link | None:
    """The rtnl.Link called `name` in the netns (None: this one), or None."""
    if not name or len(name.encode()) > 15:
        return None
    try:
        with RouteSocket(netns_path) as sock:
            return sock.link(name)
    except OSError as err:
        raise CNIError(INTERNAL, f'failed to look up "{name}": {strerror(err)}') from None


def require_master(netns_path: str | None, master: str) -> Link:
    """The parent link of a macvlan/ipvlan/vlan: in the host netns, or the container's."""
    link = lookup(netns_path, master)
    if link is None:
        raise CNIError(
            INTERNAL,
            f'failed to lookup master "{master}": link not found',
            f'there is no interface "{master}" in the {where(netns_path)}',
        )
    return link


def default_route_interface(netns_path: str | None = None) -> str:
    """The interface of the first default route (IPv4, then IPv6) in the main table."""
    with RouteSocket(netns_path) as sock:
        oif = sock.default_route_oif()
        link = sock.link_by_index(oif) if oif else None
    if link is None:
        raise CNIError(
            INTERNAL,
            "no default route interface found",
            f'the {where(netns_path)} has no default route; set "master" in the config',
        )
    return link.name


def require_configured_master(conf) -> None:
    """STATUS beyond upstream: a configured host master (`master`, not `linkInContainer`) that
    is gone means no new container can join the network (code 50)."""
    master, in_container = conf.master, conf.linkInContainer
    if master and not in_container and lookup(None, master) is None:
        raise CNIError(
            PLUGIN_NOT_AVAILABLE,
            f'master interface "{master}" does not exist',
            "new containers cannot be attached until it is back",
        )


# -- creating and removing -----------------------------------------------------------------


# IFLA_INFO_DATA of the child link kinds: attribute numbers, and the macvlan mode values.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IFLA_MACVLAN_MODE, IFLA_MACVLAN_BC_QUEUE_LEN = 1, 7
IFLA_IPVLAN_MODE = 1
IFLA_VLAN_ID = 1


def _kind_data(kind: str, settings: dict) -> bytes:
    import struct

    from libcni.kernel.netlink import _attr

    data = b""
    if kind == "macvlan":
        data += _attr(IFLA_MACVLAN_MODE, struct.pack("=I", MACVLAN_MODES[settings["macvlan_mode"]]))
        if settings.get("macvlan_bc_queue_len"):
            data += _attr(
                IFLA_MACVLAN_BC_QUEUE_LEN, struct.pack("=I", settings["macvlan_bc_queue_len"])
            )
    elif kind == "ipvlan":
        data += _attr(IFLA_IPVLAN_MODE, struct.pack("=H", settings["ipvlan_mode"]))
    elif kind == "vlan":
        data += _attr(IFLA_VLAN_ID, struct.pack("=H", settings["vlan_id"]))
    return data


def kind_data(netns_path: str, name: str) -> dict:
    """The kind-specific settings of a link, named as pyroute2 names them
    ({"IFLA_MACVLAN_MODE": "bridge"}, {"IFLA_IPVLAN_MODE": 0}, {"IFLA_VLAN_ID": 100})."""
    import struct

    link = lookup(netns_path, name)
    if link is None:
        return {}
    data = link.info_data
    if link.kind == "macvlan" and IFLA_MACVLAN_MODE in data:
        mode = struct.unpack("=I", data[IFLA_MACVLAN_MODE])[0]
        names = {value: key for key, value in MACVLAN_MODES.items()}
        return {"IFLA_MACVLAN_MODE": names.get(mode, str(mode))}
    if link.kind == "ipvlan" and IFLA_IPVLAN_MODE in data:
        return {"IFLA_IPVLAN_MODE": struct.unpack("=H", data[IFLA_IPVLAN_MODE][:2])[0]}
    if link.kind == "vlan" and IFLA_VLAN_ID in data:
        return {"IFLA_VLAN_ID": struct.unpack("=H", data[IFLA_VLAN_ID][:2])[0]}
    return {}


def _create_error(kind: str, err, explain: dict | None) -> CNIError:
    code = error_code(err)
    details = (explain or {}).get(code, "")
    if not details and code == errno.EOPNOTSUPP and kind in MODULES:
        details = f"this kernel cannot create {kind} links (is the {MODULES[kind]} module loaded?)"
    return CNIError(INTERNAL, f"failed to create {kind}: {strerror(err)}", details)


def create_child(
    kind: str,
    netns_path: str,
    ifname: str,
    master,
    *,
    master_in_container: bool = False,
    mtu: int = 0,
    mac: str = "",
    explain: dict | None = None,
    **settings,
) -> dict:
    """Create a `kind` link on `master` inside the container netns and name it `ifname`.

    The link is born in the container netns under a temporary name and renamed there, so a
    host link called like CNI_IFNAME never clashes. Returns the result interface entry.
    `explain` maps an errno of the create call to a hint for the operator.
    """
    temp = temp_name()
    data = _kind_data(kind, settings)
    try:
        if master_in_container:
            with RouteSocket(netns_path) as sock:
                sock.add_link(temp, kind, mtu=mtu, mac=mac, data=data, parent=master.index)
        else:
            target = netns.open_netns(netns_path)
            try:
                with RouteSocket() as sock:
                    sock.add_link(
                        temp,
                        kind,
                        mtu=mtu,
                        mac=mac,
                        data=data,
                        parent=master.index,
                        netns_fd=target,
                    )
            finally:
                os.close(target)
    except OSError as err:
        raise _create_error(kind, err, explain) from None
    return _rename_new_link(netns_path, temp, ifname, kind)


def create_for(call, kind: str, master, conf, **settings) -> dict:
    """create_child for a plugin call: in CNI_NETNS as CNI_IFNAME, with the config's
    `linkInContainer` and `mtu` (macvlan, ipvlan and vlan all have both)."""
    return create_child(
        kind,
        call.netns,
        call.ifname,
        master,
        master_in_container=conf.linkInContainer,
        mtu=conf.mtu,
        **settings,
    )


def create_in(netns_path: str, ifname: str, kind: str) -> dict:
    """Create a standalone link (dummy) directly under its final name in the netns."""
    with RouteSocket(netns_path) as sock:
        try:
            sock.add_link(ifname, kind)
        except OSError as err:
            raise _create_error(
                kind, err, {errno.EEXIST: _name_taken(ifname, netns_path)}
            ) from None
        link = sock.link(ifname)
    return {"name": ifname, "mac": link.mac if link else "", "sandbox": netns_path}


def _name_taken(ifname: str, netns_path: str) -> str:
    return f'an interface named "{ifname}" already exists in the {where(netns_path)}'


def _rename_new_link(netns_path: str, temp: str, ifname: str, kind: str) -> dict:
    with RouteSocket(netns_path) as sock:
        link = require(sock, temp, f'failed to find the new {kind} "{temp}" in {netns_path}')
        try:
            sock.set_link(link.index, name=ifname)
        except OSError as err:
            try:
                sock.delete_link(link.index)
            except OSError:
                pass
            details = _name_taken(ifname, netns_path) if err.errno == errno.EEXIST else ""
            raise CNIError(
                INTERNAL, f'failed to rename {kind} to "{ifname}": {strerror(err)}', details
            ) from None
        link = sock.link(ifname)
    return {"name": ifname, "mac": link.mac if link else "", "sandbox": netns_path}


def delete(netns_path: str, ifname: str) -> bool:
    """Remove `ifname` from the netns; False when there was nothing to remove.

    DEL is idempotent: no netns path, a netns that is gone and a missing link are all fine.
    It runs for every container teardown, so it speaks rtnetlink through libcni.kernel.rtnl (the
    standard library) instead of paying for the pyroute2 import.
    """
    if not netns_path or not netns.exists(netns_path):
        return False
    try:
        with RouteSocket(netns_path) as sock:
            link = sock.link(ifname) if len(ifname.encode()) <= 15 else None
            if link is None:
                return False
            sock.delete_link(link.index)
    except netns.NetnsMissing:
        return False
    except OSError as err:
        if err.errno == errno.ENODEV:
            return False
        raise CNIError(INTERNAL, f'failed to delete "{ifname}": {strerror(err)}') from None
    return True


def set_up(netns_path: str, ifname: str) -> None:
    with RouteSocket(netns_path) as sock:
        link = require(sock, ifname, f'failed to find interface "{ifname}" in {netns_path}')
        change(sock, link.index, f'set "{ifname}" up', state="up")


def notify_neighbours(netns_path: str, ifname: str, ipv6: bool = True) -> None:
    """Announce the new MAC on up/address changes (gratuitous ARP, unsolicited NA).

    Best effort like upstream: a kernel without IPv6 simply lacks the second key.
    """
    keys = [sysctl.iface_key("ipv4", ifname, "arp_notify")]
    if ipv6:
        keys.append(sysctl.iface_key("ipv6", ifname, "ndisc_notify"))
    with netns.entered(netns_path):
        for key in keys:
            try:
                sysctl.write(key, "1")
            except OSError:
                pass


# pyroute2-style change names (kept by the callers) -> RouteSocket.set_link keywords.
_CHANGES = {
    "mtu": "mtu",
    "address": "mac",
    "ifname": "name",
    "master": "master",
    "ifalias": "alias",
    "net_ns_fd": "netns_fd",
}


def change(sock, index: int, what: str, **changes) -> None:
    """Apply pyroute2-style `changes` (mtu, address, ifname, master, state, ...) to link `index`;
    a kernel refusal becomes the CNI error "failed to <what>: <reason>"."""
    settings = {_CHANGES[k]: v for k, v in changes.items() if k != "state"}
    if "state" in changes:
        settings["up"] = changes["state"] == "up"
    try:
        sock.set_link(index, **settings)
    except OSError as err:
        details = ""
        if error_code(err) == errno.EEXIST and "ifname" in changes:
            details = f'an interface named "{changes["ifname"]}" already exists there'
        raise CNIError(INTERNAL, f"failed to {what}: {strerror(err)}", details) from None
