"""Links the main plugins make, find and remove: upstream's pkg/ip link helpers and the
per-plugin create/rename steps (create in a temporary name, rename, so a clash never leaves a
half-made link), deletion that tolerates a gone netns or link, and STATUS's master check.

Everything works on kernel sessions (libcni.kernel.session.Session) and the Link objects the
caller holds: the verb opens one session per namespace and hands it down. No pyroute2 here:
these run on every ADD and DEL. MACs are in macaddr, CHECK in linkcheck.
"""

import errno
import os

from libcni.kernel import sysctl
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, error_code, strerror
from libcni.protocol.errors import INTERNAL, PLUGIN_NOT_AVAILABLE, CNIError
from libcni.rollback import Rollback

__all__ = ["Link", "error_code", "strerror"]  # re-exported: meta plugins word errors with them

# Kernel modules behind the link kinds, for "operation not supported" hints.
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy"}


def temp_name() -> str:
    """A random `vethXXXXXXXX` name (upstream's RandomVethName; NetworkManager ignores veth*)."""
    return "veth" + os.urandom(4).hex()


def interface_entry(link: Link, session: Session) -> dict:
    """The result's interface entry of `link` (with its sandbox when it is in a container)."""
    entry = {"name": link.name, "mac": link.mac}
    if session.netns_path:
        entry["sandbox"] = session.netns_path
    return entry


# -- looking links up ----------------------------------------------------------------------


def find_by_mac(session: Session, mac: str) -> Link | None:
    """The first link (by index) whose MAC is `mac` (canonical form)."""
    return next((link for link in session.links() if link.mac.lower() == mac), None)


def require_master(session: Session, master: str) -> Link:
    """The parent link of a macvlan/ipvlan/vlan: in the host netns, or the container's."""
    return session.require(
        master,
        f'failed to lookup master "{master}": link not found',
        f'there is no interface "{master}" in the {session.where}',
    )


def default_route_interface(session: Session) -> str:
    """The interface of the first default route (IPv4, then IPv6) in the main table."""
    oif = session.rtnl.default_route_oif()
    link = session.link_by_index(oif) if oif else None
    if link is None:
        raise CNIError(
            INTERNAL,
            "no default route interface found",
            f'the {session.where} has no default route; set "master" in the config',
        )
    return link.name


def parent_session(call, in_container: bool) -> Session:
    """The session where a macvlan/ipvlan/vlan master lives: CNI_NETNS with
    `linkInContainer`, else the host. Enter it before container_session()."""
    return Session(call.netns if in_container else None)


def container_session(call, parent_side: Session):
    """The session on CNI_NETNS as a context manager: `parent_side` itself when the master
    lives in the container (it stays open for its own `with`), else a new one."""
    return parent_side.shared() if parent_side.netns_path else Session(call.netns)


def container_side(parent_side: Session) -> Session | None:
    """`parent_side` when it is the container's session (linkInContainer), else None: for
    linkcheck.check_attachment(container=...), which opens CNI_NETNS itself when given None."""
    return parent_side if parent_side.netns_path else None


def require_configured_master(conf) -> None:
    """STATUS beyond upstream: a configured host master (`master`, not `linkInContainer`) that
    is gone means no new container can join the network (code 50)."""
    master, in_container = conf.master, conf.linkInContainer
    if not master or in_container:
        return
    with Session() as host:
        missing = host.link(master) is None
    if missing:
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


def kind_data(link: Link) -> dict:
    """The kind-specific settings of a link, named as pyroute2 names them
    ({"IFLA_MACVLAN_MODE": "bridge"}, {"IFLA_IPVLAN_MODE": 0}, {"IFLA_VLAN_ID": 100})."""
    import struct

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
    parent_side: Session,
    container: Session,
    ifname: str,
    master: Link,
    *,
    mtu: int = 0,
    mac: str = "",
    explain: dict | None = None,
    **settings,
) -> Link:
    """Create a `kind` link on `master` (which lives in `parent_side`: the host session, or
    the container's with linkInContainer) inside `container`, named `ifname`.

    The link is born in the container netns under a temporary name and renamed there, so a
    host link called like CNI_IFNAME never clashes. `explain` maps an errno of the create call
    to a hint for the operator.
    """
    temp = temp_name()
    data = _kind_data(kind, settings)
    target: dict = {} if parent_side is container else {"netns_fd": container.netns_fd}
    try:
        parent_side.rtnl.add_link(
            temp, kind, mtu=mtu, mac=mac, data=data, parent=master.index, **target
        )
    except OSError as err:
        raise _create_error(kind, err, explain) from None
    link = container.require(
        temp, f'failed to find the new {kind} "{temp}" in {container.netns_path}'
    )
    _rename_new_link(container, link, ifname, kind)
    return link


def create_for(
    call, kind: str, parent_side: Session, container: Session, master: Link, conf, **settings
) -> Link:
    """create_child for a plugin call: CNI_IFNAME with the config's `mtu` (macvlan, ipvlan
    and vlan all have it)."""
    return create_child(kind, parent_side, container, call.ifname, master, mtu=conf.mtu, **settings)


class child_link:  # noqa: N801 - used like a function: `with links.child_link(...) as child:`
    """What a macvlan, ipvlan or vlan ADD opens with, as one `with`: the session where the
    master lives (the host, or CNI_NETNS with `linkInContainer`), the master that
    `find_master(parent_side)` finds there, the container's session, a rollback stack, and the
    new link under CNI_IFNAME in the container (create_for with the `settings` dict), its delete the
    first undo step. The block gets `child.container`, `child.link` and `child.undo`; on an
    error the stack unwinds while the sessions are still open, then they close."""

    def __init__(self, call, conf, kind: str, find_master, settings: dict) -> None:
        # `settings` is read when the link is created, after find_master (which may complete
        # it: macvlan's MAC is settled with the master, as upstream's loadConf does).
        self.call, self.conf, self.kind = call, conf, kind
        self.find_master, self.settings = find_master, settings
        self.undo = Rollback()

    def __enter__(self) -> "child_link":
        self._parent_side = parent_session(self.call, self.conf.linkInContainer)
        try:
            master = self.find_master(self._parent_side)
            self._container = container_session(self.call, self._parent_side)
            self.container: Session = self._container.__enter__()
            try:
                self.link = create_for(
                    self.call,
                    self.kind,
                    self._parent_side,
                    self.container,
                    master,
                    self.conf,
                    **self.settings,
                )
            except BaseException:
                self._container.__exit__(None, None, None)
                raise
        except BaseException:
            self._parent_side.close()
            raise
        self.undo.push(self.container.delete_link, self.link)
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            self.undo.__exit__(kind, value, tb)  # never raises: undo failures are logged
        finally:
            try:
                self._container.__exit__(kind, value, tb)
            finally:
                self._parent_side.close()


def create_in(container: Session, ifname: str, kind: str) -> Link:
    """Create a standalone link (dummy) directly under its final name in the netns."""
    try:
        container.rtnl.add_link(ifname, kind)
    except OSError as err:
        raise _create_error(kind, err, {errno.EEXIST: _name_taken(ifname, container)}) from None
    return container.require(ifname, f'failed to find the new {kind} "{ifname}"')


def _name_taken(ifname: str, session: Session) -> str:
    return f'an interface named "{ifname}" already exists in the {session.where}'


def _rename_new_link(container: Session, link: Link, ifname: str, kind: str) -> None:
    try:
        container.set_link(
            link,
            f'failed to rename {kind} to "{ifname}"',
            exists=_name_taken(ifname, container),
            name=ifname,
        )
    except CNIError:
        container.delete_link(link)
        raise


def delete(session: Session | None, ifname: str) -> bool:
    """Remove `ifname` from the session's netns; False when there was nothing to remove.

    DEL is idempotent: no session (no netns path, or a netns that is gone) and a missing link
    are both fine.
    """
    if session is None:
        return False
    link = session.link(ifname)
    if link is None:
        return False
    return session.delete_link(link)


def announce_settings(ifname: str, ipv6: bool = True) -> list:
    """The sysctls that announce a new MAC on up/address changes (gratuitous ARP, unsolicited
    NA): best effort like upstream, for iface.configure(settings=...)."""
    keys = [sysctl.iface_key("ipv4", ifname, "arp_notify")]
    if ipv6:
        keys.append(sysctl.iface_key("ipv6", ifname, "ndisc_notify"))
    return [(key, "1") for key in keys]


def write_best_effort(settings) -> None:
    """Write (key, value) sysctls in this thread's netns, skipping keys the kernel lacks."""
    for key, value in settings:
        try:
            sysctl.write(key, value)
        except OSError:
            pass


def set_up(session: Session, link: Link) -> None:
    session.set_link(link, f'failed to set "{link.name}" up', up=True)
