"""Moving a host device into the container netns under CNI_IFNAME and back out under its old
name, through a temporary netns so that a name clash on either side never half-moves it."""

import os
from contextlib import contextmanager

from libcni.kernel import netns
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session, strerror
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.rollback import Rollback

CLONE_NEWNET = 0x40000000


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


def _move(source: Session, link: Link, target: Session, what: str) -> None:
    """Move `link` from `source` to `target` and re-read it there (its index may change)."""
    source.set_link(
        link,
        f'failed to move "{link.name}" {what}',
        exists=f'an interface named "{link.name}" already exists {what}',
        netns_fd=target.netns_fd,
    )
    moved = target.require(link.name, f'failed to find "{link.name}" after moving it {what}')
    link.__dict__.update(moved.__dict__)


def _rename(session: Session, link: Link, name: str, what: str) -> None:
    session.set_link(
        link,
        f"failed to {what}",
        exists=f'an interface named "{name}" already exists there',
        name=name,
    )


def _restore_up(session: Session, name: str) -> None:
    link = session.link(name)
    if link is not None:
        session.set_link(link, "failed to restore the up state", up=True)


@contextmanager
def _parked(source: Session, link: Link, back: str):
    """`link` moved from `source` into a fresh netns for the block, which gets that netns's
    session and the Rollback: if the block fails, the link goes back to `source` (and up
    again if it was)."""
    with temporary_netns() as temp_fd, Session.on_fd(temp_fd, "tempNS") as temp:
        with Rollback() as undo:
            if link.up:
                undo.push(_restore_up, source, link.name)
            _move(source, link, temp, "to tempNS")
            undo.push(_move, temp, link, source, back)
            yield temp, undo


def move_in(host: Session, container: Session, device: Link, ifname: str) -> Link:
    """Move host link `device` into the container as `ifname`, remembering the old name.

    Upstream's order: host -> temporary netns (rename to `ifname`, store the host name in the
    link alias) -> container netns (up). Every step is undone if a later one fails. `device`
    follows the link: it is the container's link afterwards.
    """
    host_name = device.name
    with _parked(host, device, "back to the host netns") as (temp, undo):
        if ifname != host_name:
            _rename(temp, device, ifname, f'rename host device "{host_name}" to "{ifname}"')
            undo.push(_rename, temp, device, host_name, "restore the name")
        temp.set_link(device, f'failed to set alias to "{host_name}"', alias=host_name)
        undo.push(temp.set_link, device, "failed to clear the alias", alias="")
        _move(temp, device, container, "to the container netns")
        undo.push(_move, container, device, temp, "back to tempNS")
        container.set_link(device, f'failed to set "{ifname}" up', up=True)
    return device


def move_out(host: Session, container: Session, link: Link, fallback_name: str = "") -> str:
    """Give a moved-in device back to the host under its original name (left down).

    The original name comes from the alias set by move_in (ours or upstream's), else from
    `fallback_name`. Returns that name.
    """
    original = link.alias or fallback_name
    if not original:
        raise CNIError(
            INTERNAL,
            f'failed to find original ifname for "{link.name}" (alias is not set)',
            'set "device" in the config to name the host device to restore',
        )
    alias, ifname = link.alias, link.name
    with _parked(container, link, "back to the container netns") as (temp, undo):
        if original != ifname:
            _rename(temp, link, original, f'rename device "{ifname}" to "{original}"')
            undo.push(_rename, temp, link, ifname, "restore the name")
        if alias:
            temp.set_link(link, f'failed to unset alias of "{original}"', alias="")
            undo.push(temp.set_link, link, "failed to restore the alias", alias=alias)
        _move(temp, link, host, "to the host netns")
    return original
