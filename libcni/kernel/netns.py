"""Network namespace helpers: open and verify a netns path, run code inside it, come back.

setns(2) changes the namespace of the calling *thread* only, so entering is done per thread and
undone before the block ends; other threads of the process are never moved. We call setns
through ctypes instead of pyroute2's helpers, which fork and may create a missing namespace.
"""

import os

from libcni.protocol.errors import INTERNAL, CNIError
from libcni.protocol.netnsid import CURRENT_NETNS, is_current_netns

__all__ = ["is_current_netns"]  # it lives with the protocol, which checks CNI_NETNS with it

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs fd: which kind of namespace it is

_libc = None


class NetnsMissing(CNIError):
    """The netns path does not exist (any more): DEL treats this as already cleaned up."""


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """Open `path` and make sure it is a network namespace; returns an O_CLOEXEC fd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsMissing(
            INTERNAL,
            f'failed to open netns "{path}": no such file or directory',
            "the network namespace does not exist (was the container removed?)",
        ) from None
    except OSError as err:
        raise CNIError(INTERNAL, f'failed to open netns "{path}": {err.strerror}') from None
    try:
        import fcntl

        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise CNIError(
            INTERNAL,
            f'"{path}" is not a network namespace',
            "CNI_NETNS must be a netns path such as /var/run/netns/NAME or /proc/PID/ns/net",
        )
    return fd


def current_netns_path() -> str:
    return CURRENT_NETNS


def exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)


class entered:  # noqa: N801 - used like a function: `with netns.entered(path):`
    """Run the block with this thread inside the given netns (a path or an open fd).

    A class rather than a contextlib generator: contextlib costs ~3 ms of imports per exec.
    """

    def __init__(self, path_or_fd):
        self.path_or_fd = path_or_fd
        self.target = -1
        self.origin = -1

    def __enter__(self):
        owned = isinstance(self.path_or_fd, str)
        self.target = open_netns(self.path_or_fd) if owned else self.path_or_fd
        try:
            self.origin = os.open(current_netns_path(), os.O_RDONLY | os.O_CLOEXEC)
            _setns(self.target)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc):
        try:
            _setns(self.origin)
        except OSError as err:  # this thread is now stranded in the wrong netns
            os.write(2, f"pycni: cannot return to the original netns: {err}\n".encode())
            os._exit(70)
        finally:
            self._close()
        return False

    def _close(self):
        if self.origin >= 0:
            os.close(self.origin)
            self.origin = -1
        if isinstance(self.path_or_fd, str) and self.target >= 0:
            os.close(self.target)
        self.target = -1
