"""The test session's private mount namespace: nothing a test runs writes the machine's CNI paths.

A plugin run with its default state paths (a fuzz input that drops `dataDir`, a test of the
defaults) writes /var/lib/cni, /run/cni or /etc/cni. So before any test runs, the pytest process
leaves the machine's mount namespace for a private one (unshare(CLONE_NEWNS), every mount made
private) and mounts a tmpfs over each of those paths; every process a test starts inherits it
(the daemon, containerd and podman nodes then make their own namespaces from this one). At the
end, the machine's view of those paths — seen through the namespace the session started in —
must be what it was before; `leftovers()` says what is not.

A path missing on the machine gets an empty directory as the mount point, marked with an xattr;
it is removed again at the end when still empty and no other session's namespace mounts it.
"""

import contextlib
import ctypes
import os
import subprocess

PATHS = ("/var/lib/cni", "/run/cni", "/etc/cni")

_MARK = "user.pycni-test-mountpoint"  # on a folder a session created to mount over
_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


class PrivateMounts:
    """enter() once, before any test; leftovers() and close() at the end of the session."""

    def __init__(self, paths=PATHS):
        self.paths = paths
        self.machine_ns = -1  # an fd of the mount namespace the session started in
        self.before: set = set()
        self.underneath: dict = {}  # path -> fd of the machine's folder under the tmpfs

    def enter(self) -> None:
        self.machine_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.before = self.machine_view()
        for path in self.paths:
            if not os.path.isdir(path):
                os.makedirs(path, mode=0o755)
                with contextlib.suppress(OSError):  # a file system without user xattrs
                    os.setxattr(path, _MARK, b"1")
            # The machine's folder, kept open: its mark is read there at the end.
            self.underneath[path] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        libc = _libc()
        _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Private first: a mount below must not propagate back to the machine's namespace.
        _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
        for path in self.paths:
            _check(
                libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"mode=0755"),
                f"mount a tmpfs on {path}",
            )

    def _in_machine_ns(self, *argv) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nsenter", f"--mount=/proc/self/fd/{self.machine_ns}", "--", *argv],
            pass_fds=(self.machine_ns,),
            capture_output=True,
            text=True,
            check=False,
        )

    def machine_view(self) -> set:
        """(path, type, size, mtime) of everything under the paths, as the machine sees it."""
        listing = self._in_machine_ns(
            "find", *self.paths, "-mindepth", "1", "-printf", "%p\t%y\t%s\t%T@\n"
        )
        entries = set()
        for line in listing.stdout.splitlines():
            path, kind, size, mtime = line.split("\t")
            # A folder counts by its name: its times change when something came and went.
            entries.add((path, kind, "", "") if kind == "d" else (path, kind, size, mtime))
        return entries

    def leftovers(self) -> list:
        """What the machine's paths hold now and did not hold (or held otherwise) before."""
        return sorted(self.machine_view() - self.before)

    def close(self) -> None:
        """Remove the mount points a session made for missing paths (marked with an xattr, so
        the last of several concurrent sessions removes them too), when nothing landed in them
        and no other session's namespace still has its tmpfs there: removing a mount point
        detaches the mounts on it in every namespace."""
        for path, fd in self.underneath.items():
            try:
                marked = os.getxattr(fd, _MARK) == b"1"
            except OSError:
                marked = False
            os.close(fd)
            if marked and not _mounted_elsewhere(path):
                self._in_machine_ns("rmdir", path)
        os.close(self.machine_ns)


def _mounted_elsewhere(path: str) -> bool:
    """Whether a mount namespace other than this process's has a mount on `path`."""
    own = os.readlink("/proc/self/ns/mnt")
    seen = {own}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/mnt")
            if namespace in seen:
                continue
            seen.add(namespace)
            with open(f"/proc/{pid}/mountinfo") as f:
                if any(line.split()[4] == path for line in f):
                    return True
        except (OSError, IndexError):
            continue
    return False
