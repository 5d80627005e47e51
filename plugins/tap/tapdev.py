"""Making a persistent tap device inside the container netns: the tun ioctls (owner, group,
multi-queue), or `ip tuntap` under an SELinux label, then rename, MTU, MAC, bridge port, up."""

import os

from libcni.kernel import links
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.rollback import Rollback

TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, 0x400454CE
IFF_TAP, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x0100, 0x1000, 0x4000


def _make_tap(name: str, flags: int, owner: int | None, group: int | None) -> None:
    """A persistent tap in this thread's netns (the tun device belongs to the opener's netns)."""
    import fcntl
    import struct

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        # ioctl() takes a C int; uid_t/gid_t are 32-bit unsigned, so ids above INT_MAX go in
        # as the same 32 bits read signed.
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner - 2**32 if owner >= 2**31 else owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group - 2**32 if group >= 2**31 else group)
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
    container: Session,
    ifname: str,
    *,
    mtu: int = 0,
    mac: str = "",
    multi_queue: bool = False,
    owner: int | None = None,
    group: int | None = None,
    selinux_context: str = "",
    bridge: str = "",
    settings=(),
) -> Link:
    """A persistent tap named `ifname` in the container, optionally a port of `bridge` there,
    up; then the (key, value) sysctls of `settings` are written, in the same netns entry."""
    temp = links.temp_name()
    # Upstream creates the tap through netlink (tap + vnet_hdr) only when both owner and group
    # are given, otherwise with `ip tuntap` (tap + no_pi); the flags show in `ip -d link`.
    if owner is not None and group is not None and not selinux_context:
        flags = IFF_TAP | IFF_VNET_HDR | (IFF_MULTI_QUEUE | IFF_NO_PI if multi_queue else 0)
    else:
        flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    # The tun device belongs to the opener's netns; the rtnetlink steps below do not care
    # where the thread is, so the whole tap is made in one entry.
    with container.inside():
        try:
            if selinux_context:
                _make_tap_with_ip(temp, multi_queue, owner, group, selinux_context)
            else:
                _make_tap(temp, flags, owner, group)
        except OSError as err:
            raise CNIError(INTERNAL, f"failed to create tap: {strerror(err)}") from None
        link = container.require(
            temp, f'failed to find the new tap "{temp}" in {container.netns_path}'
        )
        _set_up_tap(container, link, ifname, mtu, mac, bridge)
        links.write_best_effort(settings)
    return link


def _set_up_tap(container: Session, link: Link, ifname: str, mtu: int, mac: str, bridge: str):
    # A tap half set up (renamed, MTU, bridge port) is removed again.
    with Rollback() as undo:
        undo.push(container.delete_link, link)
        changes: dict = {}
        if mtu:
            changes["mtu"] = mtu
        if mac:
            changes["mac"] = mac
        if changes:
            container.set_link(link, "failed to configure tap", **changes)
        container.set_link(
            link,
            f'failed to rename tap to "{ifname}"',
            exists=f'an interface named "{ifname}" already exists there',
            name=ifname,
        )
        if bridge:
            port_of = container.require(
                bridge,
                f"failed to get bridge {bridge}: link not found",
                f"the bridge must already exist in the {container.where}",
            )
            container.set_link(
                link,
                f"failed to set tap {ifname} as a port of bridge {bridge}",
                master=port_of.index,
            )
        container.set_link(link, "failed to set tap interface up", up=True)
