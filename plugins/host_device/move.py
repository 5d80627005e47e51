"""Moving a host device into the container netns under CNI_IFNAME and back out under its old
name, through a temporary netns so that a name clash on either side never half-moves it."""

import errno
import os
from contextlib import contextmanager

from libcni.kernel import links, netns
from libcni.kernel.rtnl import RouteSocket
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
        raise CNIError(INTERNAL, f"failed to create tempNS: {links.strerror(box['error'])}")
    try:
        yield box["fd"]
    finally:
        os.close(box["fd"])


def _fd_session(fd: int | None):
    return RouteSocket(fd)


def _move(session_factory, name: str, target_fd: int, what: str) -> None:
    with session_factory() as ipr:
        link = links.find(ipr, name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find "{name}" to move it {what}')
        try:
            ipr.set_link(link.index, netns_fd=target_fd)
        except OSError as err:
            details = ""
            if err.errno == errno.EEXIST:
                details = f'an interface named "{name}" already exists {what}'
            raise CNIError(
                INTERNAL, f'failed to move "{name}" {what}: {links.strerror(err)}', details
            ) from None


def _set(session_factory, name: str, what: str, **changes) -> None:
    with session_factory() as ipr:
        link = links.find(ipr, name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find "{name}" to {what}')
        links.change(ipr, link.index, what, **changes)


@contextmanager
def _parked(source, source_fd: int, name: str, was_up: bool, back: str):
    """Link `name` moved from `source` into a fresh netns for the block, which gets a session
    factory for it, its fd and the Rollback: if the block fails, the link goes back to
    `source` (and up again if it was)."""
    with temporary_netns() as temp_fd, Rollback() as undo:
        if was_up:
            undo.push(_set, source, name, "restore the up state", state="up")
        _move(source, name, temp_fd, "to tempNS")
        temp = lambda: _fd_session(temp_fd)  # noqa: E731
        undo.push(_move, temp, name, source_fd, back)
        yield temp, temp_fd, undo


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
            link = links.find(ipr, host_name)
        if link is None:
            raise CNIError(INTERNAL, f'failed to find host device "{host_name}"')
        parked = _parked(host, here, host_name, link.up, "back to the host netns")
        with parked as (temp, temp_fd, undo):
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
                moved = links.find(ipr, ifname)
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
            link = links.find(ipr, ifname)
        if link is None:
            return None
        original = link.alias or fallback_name
        if not original:
            raise CNIError(
                INTERNAL,
                f'failed to find original ifname for "{ifname}" (alias is not set)',
                'set "device" in the config to name the host device to restore',
            )
        parked = _parked(inside, container, ifname, link.up, "back to the container netns")
        with parked as (temp, _, undo):
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
