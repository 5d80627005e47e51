"""Links the main plugins make, find, move and remove (upstream's pkg/ip link helpers and the
per-plugin create/rename steps), plus the CHECK comparisons they share.

Everything works on netns paths (or fds): an rtnetlink socket (libcni.kernel.rtnl.RouteSocket) is
opened inside the namespace that holds the link, so the calling thread stays in its own netns.
No pyroute2 here: these run on every ADD and DEL.
"""

import errno
import ipaddress
import os
from contextlib import contextmanager

from libcni.kernel import netns, sysctl
from libcni.kernel.rtnl import Link, RouteSocket
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.rollback import Rollback

MAIN_TABLE = 254
AF_INET, AF_INET6 = 2, 10
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000

# Kernel modules behind the link kinds, for "operation not supported" hints.
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy"}


# -- names, errors, MACs -------------------------------------------------------------------


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


def parse_mac(text: str, source: str) -> str:
    """A 6-byte MAC (`aa:bb:..`, `aa-bb-..` or `aabb.ccdd.eeff`) in canonical lower-case form."""
    if "." in text:
        groups, width = text.split("."), 4
        ok = len(groups) == 3
    else:
        groups, width = text.replace("-", ":").split(":"), 2
        ok = len(groups) == 6 and ("-" not in text or ":" not in text)
    ok = ok and all(
        len(g) == width and all(c in "0123456789abcdefABCDEF" for c in g) for g in groups
    )
    if not ok:
        raise CNIError(
            INTERNAL,
            f'invalid MAC address "{text}" in {source}',
            "expected six hex bytes such as 0a:58:0a:f4:00:05",
        )
    digits = "".join(groups).lower()
    mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if int(digits[:2], 16) & 1:
        raise CNIError(
            INTERNAL,
            f'invalid MAC address "{text}" in {source}: it is a multicast address',
            "the lowest bit of the first byte must be 0 for an interface address",
        )
    return mac


def requested_mac(call, config_mac: str, runtime_mac: str) -> str:
    """The MAC a container asked for, in upstream's precedence, canonical; "" for none.

    config "mac" < CNI_ARGS MAC < runtimeConfig.mac (capability "mac").
    """
    mac, source = config_mac, 'config "mac"'
    env_mac = call.cni_args("MAC").get("MAC", "")
    if env_mac:
        mac, source = env_mac, "CNI_ARGS MAC"
    if runtime_mac:
        mac, source = runtime_mac, "runtimeConfig.mac"
    return parse_mac(mac, source) if mac else ""


# -- looking links up ----------------------------------------------------------------------


def find(sock, name: str) -> Link | None:
    """The rtnl.Link called `name` in the socket's netns, or None."""
    if not name or len(name.encode()) > 15:
        return None
    try:
        return sock.link(name)
    except OSError as err:
        raise CNIError(INTERNAL, f'failed to look up "{name}": {strerror(err)}') from None


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


# -- creating and removing -----------------------------------------------------------------


# IFLA_INFO_DATA of the child link kinds: attribute numbers, and the macvlan mode values.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IFLA_MACVLAN_MODE, IFLA_MACVLAN_BC_QUEUE_LEN = 1, 7
IFLA_IPVLAN_MODE = 1
IFLA_VLAN_ID = 1


def _kind_data(kind: str, settings: dict) -> bytes:
    import struct

    from libcni.kernel.rtnl import _attr

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
                    sock.add_link(temp, kind, mtu=mtu, mac=mac, data=data, parent=master.index,
                                  netns_fd=target)  # fmt: skip
            finally:
                os.close(target)
    except OSError as err:
        raise _create_error(kind, err, explain) from None
    return _rename_new_link(netns_path, temp, ifname, kind)


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
        link = sock.link(temp)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find the new {kind} "{temp}" in {netns_path}')
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
        link = sock.link(ifname)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find interface "{ifname}" in {netns_path}')
        try:
            sock.set_link(link.index, up=True)
        except OSError as err:
            raise CNIError(INTERNAL, f'failed to set "{ifname}" up: {strerror(err)}') from None


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


# -- tap -----------------------------------------------------------------------------------

TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, 0x400454CE
IFF_TAP, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x0100, 0x1000, 0x4000


def _make_tap(name: str, flags: int, owner: int | None, group: int | None) -> None:
    """A persistent tap in this thread's netns (the tun device belongs to the opener's netns)."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _make_tap_with_ip(name: str, multi_queue: bool, owner, group, label: str) -> None:
    """`ip tuntap add`, run under an SELinux exec label so the tap gets that context."""
    import subprocess

    argv = ["ip", "tuntap", "add", "mode", "tap", "name", name]
    if multi_queue:
        argv.append("multi_queue")
    if owner is not None:
        argv += ["user", str(owner)]
    if group is not None:
        argv += ["group", str(group)]
    exec_attr = "/proc/thread-self/attr/exec"
    try:
        with open(exec_attr, "w") as f:
            f.write(label)
    except OSError as err:
        raise CNIError(INTERNAL, f"failed set socket label: {strerror(err)}") from None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    finally:
        try:
            with open(exec_attr, "w") as f:
                f.write("")
        except OSError:
            pass
    if proc.returncode != 0:
        raise CNIError(INTERNAL, f"failed to run command {' '.join(argv)}: {proc.stderr.strip()}")


def create_tap(
    netns_path: str,
    ifname: str,
    *,
    mtu: int = 0,
    mac: str = "",
    multi_queue: bool = False,
    owner: int | None = None,
    group: int | None = None,
    selinux_context: str = "",
    bridge: str = "",
) -> dict:
    """A persistent tap named `ifname` in the netns, optionally a port of `bridge` there, up."""
    temp = temp_name()
    # Upstream creates the tap through netlink (tap + vnet_hdr) only when both owner and group
    # are given, otherwise with `ip tuntap` (tap + no_pi); the flags show in `ip -d link`.
    if owner is not None and group is not None and not selinux_context:
        flags = IFF_TAP | IFF_VNET_HDR | (IFF_MULTI_QUEUE | IFF_NO_PI if multi_queue else 0)
    else:
        flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    with netns.entered(netns_path):
        try:
            if selinux_context:
                _make_tap_with_ip(temp, multi_queue, owner, group, selinux_context)
            else:
                _make_tap(temp, flags, owner, group)
        except OSError as err:
            raise CNIError(INTERNAL, f"failed to create tap: {strerror(err)}") from None
    with RouteSocket(netns_path) as ipr:
        link = find(ipr, temp)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find the new tap "{temp}" in {netns_path}')
        # A tap half set up (renamed, MTU, bridge port) is removed again.
        with Rollback() as undo:
            undo.push(ipr.delete_link, link.index)
            settings: dict = {}
            if mtu:
                settings["mtu"] = mtu
            if mac:
                settings["address"] = mac
            if settings:
                _step(ipr, link.index, "configure tap", **settings)
            _step(ipr, link.index, f'rename tap to "{ifname}"', ifname=ifname)
            if bridge:
                port_of = find(ipr, bridge)
                if port_of is None:
                    raise CNIError(
                        INTERNAL,
                        f"failed to get bridge {bridge}: link not found",
                        f"the bridge must already exist in the {where(netns_path)}",
                    )
                _step(
                    ipr,
                    link.index,
                    f"set tap {ifname} as a port of bridge {bridge}",
                    master=port_of.index,
                )
            _step(ipr, link.index, "set tap interface up", state="up")
        link = find(ipr, ifname)
    return {"name": ifname, "mac": link.mac if link else "", "sandbox": netns_path}


# pyroute2-style change names (kept by the callers) -> RouteSocket.set_link keywords.
_CHANGES = {"mtu": "mtu", "address": "mac", "ifname": "name", "master": "master",
            "ifalias": "alias", "net_ns_fd": "netns_fd"}  # fmt: skip


def _step(sock, index: int, what: str, **changes) -> None:
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


# -- moving a host device in and out (host-device) -----------------------------------------


@contextmanager
def temporary_netns():
    """An anonymous netns (an fd) for the block: a neutral place to rename a device in.

    It is made by a short-lived thread that unshares its own netns, so this thread never moves.
    Closing the fd destroys it: physical devices left inside would fall back to the initial
    netns and virtual ones would be destroyed, so callers always move devices out first.
    """
    import ctypes
    import threading

    box: dict = {}

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            box["error"] = OSError(ctypes.get_errno(), "unshare")
            return
        box["fd"] = os.open(netns.current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)

    worker = threading.Thread(target=make, name="pycni-tempns")
    worker.start()
    worker.join()
    if "fd" not in box:
        raise CNIError(INTERNAL, f"failed to create tempNS: {strerror(box['error'])}")
    try:
        yield box["fd"]
    finally:
        os.close(box["fd"])


def _fd_session(fd: int | None):
    return RouteSocket(fd)


def _move(session_factory, name: str, target_fd: int, what: str) -> None:
    with session_factory() as ipr:
        link = find(ipr, name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find "{name}" to move it {what}')
        try:
            ipr.set_link(link.index, netns_fd=target_fd)
        except OSError as err:
            details = ""
            if err.errno == errno.EEXIST:
                details = f'an interface named "{name}" already exists {what}'
            raise CNIError(
                INTERNAL, f'failed to move "{name}" {what}: {strerror(err)}', details
            ) from None


def _set(session_factory, name: str, what: str, **changes) -> None:
    with session_factory() as ipr:
        link = find(ipr, name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find "{name}" to {what}')
        _step(ipr, link.index, what, **changes)


def move_in(host_name: str, netns_path: str, ifname: str) -> dict:
    """Move host link `host_name` into the container as `ifname`, remembering the old name.

    Upstream's order: host -> temporary netns (rename to `ifname`, store the host name in the
    link alias) -> container netns (up). Every step is undone if a later one fails.
    """
    here = os.open(netns.current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    container = netns.open_netns(netns_path)
    try:
        host = lambda: _fd_session(None)  # noqa: E731
        inside = lambda: _fd_session(container)  # noqa: E731
        with _fd_session(None) as ipr:
            link = find(ipr, host_name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find host device "{host_name}"')
        with temporary_netns() as temp_fd, Rollback() as undo:
            temp = lambda: _fd_session(temp_fd)  # noqa: E731
            if link.up:
                undo.push(_set, host, host_name, "restore the up state", state="up")
            _move(host, host_name, temp_fd, "to tempNS")
            undo.push(_move, temp, host_name, here, "back to the host netns")
            if ifname != host_name:
                _set(
                    temp,
                    host_name,
                    f'rename host device "{host_name}" to "{ifname}"',
                    ifname=ifname,
                )
                undo.push(_set, temp, ifname, "restore the name", ifname=host_name)
            _set(temp, ifname, f'set alias to "{host_name}"', ifalias=host_name)
            undo.push(_set, temp, ifname, "clear the alias", ifalias="")
            _move(temp, ifname, container, "to the container netns")
            undo.push(_move, inside, ifname, temp_fd, "back to tempNS")
            _set(inside, ifname, f'set "{ifname}" up', state="up")
            with inside() as ipr:
                moved = find(ipr, ifname)
    finally:
        os.close(here)
        os.close(container)
    return {"name": ifname, "mac": moved.mac if moved else "", "sandbox": netns_path}


def move_out(netns_path: str, ifname: str, fallback_name: str = "") -> str | None:
    """Give a moved-in device back to this netns under its original name (left down).

    The original name comes from the alias set by move_in (ours or upstream's), else from
    `fallback_name`. Returns that name, or None when the container has no `ifname` any more.
    """
    here = os.open(netns.current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
    container = netns.open_netns(netns_path)
    try:
        inside = lambda: _fd_session(container)  # noqa: E731
        with inside() as ipr:
            link = find(ipr, ifname)
        if link is None:
            return None
        original = link.alias or fallback_name
        if not original:
            raise CNIError(
                INTERNAL,
                f'failed to find original ifname for "{ifname}" (alias is not set)',
                'set "device" in the config to name the host device to restore',
            )
        with temporary_netns() as temp_fd, Rollback() as undo:
            temp = lambda: _fd_session(temp_fd)  # noqa: E731
            if link.up:
                undo.push(_set, inside, ifname, "restore the up state", state="up")
            _move(inside, ifname, temp_fd, "to tempNS")
            undo.push(_move, temp, ifname, container, "back to the container netns")
            if original != ifname:
                _set(temp, ifname, f'rename device "{ifname}" to "{original}"', ifname=original)
                undo.push(_set, temp, original, "restore the name", ifname=ifname)
            if link.alias:
                _set(temp, original, f'unset alias of "{original}"', ifalias="")
                undo.push(_set, temp, original, "restore the alias", ifalias=link.alias)
            _move(temp, original, here, "to the host netns")
    finally:
        os.close(here)
        os.close(container)
    return original


# -- CHECK ---------------------------------------------------------------------------------


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


def check_interface(netns_path: str, entry: dict, kind: str | None):
    """Our interface exists in the container, is a `kind` link and has the recorded MAC.

    Returns the rtnl.Link; plugins that also compare kind-specific data (a macvlan's mode)
    read it with kind_data()."""
    name = entry.get("name", "")
    with RouteSocket(netns_path) as sock:
        link = sock.link(name) if name and len(name.encode()) <= 15 else None
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


def check_addresses(netns_path: str, ifname: str, result, connected_route: bool = True) -> None:
    """Every prevResult address of our interface is on it, with its subnet route."""
    with RouteSocket(netns_path) as sock:
        link = sock.link(ifname)
        if link is None:
            raise CNIError(INTERNAL, f"Cannot find container link {ifname}")
        present = set(sock.addresses(link.index))
        routes = _route_set(sock) if connected_route else set()
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


def _route_set(sock) -> set:
    """(dst, table, gateway) of every route in the netns; multipath hops each count."""
    found = set()
    for family in (AF_INET, AF_INET6):
        for dst, table, gateways in sock.routes(family):
            dst = str(ipaddress.ip_network(dst, strict=False))
            for gateway in gateways:
                found.add((dst, table, str(ipaddress.ip_address(gateway)) if gateway else None))
    return found


def check_routes(netns_path: str, routes: list) -> None:
    """Every prevResult route exists in its table (main unless it names one)."""
    if not routes:
        return
    with RouteSocket(netns_path) as sock:
        present = _route_set(sock)
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


def require_master_for_status(master: str, in_container: bool) -> None:
    """STATUS beyond upstream: a configured host master that is gone means no new container
    can join the network (code 50)."""
    from libcni.protocol.errors import PLUGIN_NOT_AVAILABLE, CNIError

    if master and not in_container and lookup(None, master) is None:
        raise CNIError(
            PLUGIN_NOT_AVAILABLE,
            f'master interface "{master}" does not exist',
            "new containers cannot be attached until it is back",
        )
