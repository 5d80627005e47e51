"""What a daemon worker takes on from the process that called it: its umask, resource limits,
nice value and cgroups, so that a call the daemon serves is limited and accounted like an exec
of the plugin by that caller (a runtime's pod cgroup, a kubelet's RLIMIT_NOFILE, a umask for
files in /var/lib/cni).

They are read from /proc/<pid> of the peer (SO_PEERCRED) by the worker while the caller waits
on the socket: the client sends nothing extra. Only what differs from the worker's own is
changed (a worker starts with the server's limits and cgroups): a caller in the daemon's cgroups
with the same limits costs one read of /proc/<pid>/status, one of /proc/<pid>/cgroup, the limits'
prlimit() reads and the nice value and umask, no cgroup move. A cgroup move is the one costly
step (the kernel's cgroup threadgroup lock): a v2 hierarchy is one write of cgroup.procs, each v1
hierarchy whose cgroup differs is one more. The caller's cgroups are joined through its own
view of the cgroup mounts (/proc/<pid>/root, /proc/<pid>/mountinfo), so the daemon needs none
of its own: `ip netns exec` or a container may hide them from it.
"""

import os
import resource
from dataclasses import dataclass, field

# Every limit setrlimit() knows here (RLIMIT_CPU ... RLIMIT_RTTIME).
LIMITS = tuple(
    sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")})
)
CGROUP_V2 = "cgroup2"


class CallerUnknown(OSError):
    """The caller cannot be read or followed (gone, no procfs, a cgroup we cannot join)."""


@dataclass
class Caller:
    pid: int
    umask: int
    nice: int = 0
    limits: dict = field(default_factory=dict)  # RLIMIT_* -> (soft, hard)
    cgroups: list = field(default_factory=list)  # cgroup.procs files of cgroups to join

    def join_cgroups(self, keep: bool = False) -> list:
        """Join the caller's cgroups; with `keep`, returns a descriptor (O_PATH) of each cgroup
        joined, so that the server can place the next worker there ahead of the next call."""
        joined = []
        for procs in self.cgroups:
            try:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
                if keep:
                    joined.append(os.open(os.path.dirname(procs), os.O_PATH | os.O_DIRECTORY))
            except OSError as err:
                for fd in joined:
                    os.close(fd)
                raise CallerUnknown(err.errno, f"cannot join {os.path.dirname(procs)}") from err
        return joined

    def apply_limits(self) -> None:
        """Take on the caller's limits, priority and umask (last thing before the plugin runs:
        a low limit must not stop our setup; the umask goes last)."""
        for limit, values in self.limits.items():
            resource.setrlimit(limit, values)
        if os.getpriority(os.PRIO_PROCESS, 0) != self.nice:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        os.umask(self.umask)


def join_ahead(directories: list, pid: int) -> None:
    """Move process `pid` (an idle worker) into the cgroups `directories` (descriptors) where
    the last caller was, so that a call from there finds it in place. A cgroup that is gone or
    refuses us is skipped: the call moves then."""
    for fd in directories:
        try:
            procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.write(procs, str(pid).encode())
            finally:
                os.close(procs)
        except OSError:
            pass


def own_cgroups(proc: str = "/proc") -> list:
    """This process's lines of /proc/self/cgroup (a worker starts in them)."""
    try:
        with open(f"{proc}/self/cgroup") as f:
            return f.read().splitlines()
    except OSError:
        return []


def own_limits() -> dict:
    """This process's limits (a worker starts with them)."""
    return {limit: resource.getrlimit(limit) for limit in LIMITS}


def read(
    pid: int, current_cgroups: list, current_limits=None, proc: str = "/proc", umask=None
) -> Caller:
    """The caller `pid`'s umask, nice value, and the limits and cgroups it has that differ from
    `current_limits` and `current_cgroups` (lines of /proc/<pid>/cgroup: moving costs a kernel
    lock)."""
    current_limits = current_limits or {}
    if pid <= 0:
        raise CallerUnknown(0, "the caller's pid is not visible from here")
    try:
        if umask is None:  # (a client that did not send it: 0.1 ms of the kernel's)
            with open(f"{proc}/{pid}/status") as f:
                umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        limits = {}
        for limit in LIMITS:
            value = resource.prlimit(pid, limit)
            if current_limits.get(limit) != value:
                limits[limit] = value
        with open(f"{proc}/{pid}/cgroup") as f:
            moves = [line for line in f.read().splitlines() if line not in current_cgroups]
        cgroups = []
        if moves:
            cgroups = cgroup_procs_files(moves, f"{proc}/{pid}/mountinfo", f"{proc}/{pid}/root")
    except (OSError, StopIteration, ValueError) as err:
        raise CallerUnknown(0, f"cannot read caller {pid}: {err}") from err
    return Caller(pid, umask, nice, limits, cgroups)


def cgroup_procs_files(lines: list, mountinfo: str, root: str = "/") -> list:
    """The cgroup.procs file of each cgroup of `lines` (from a /proc/<pid>/cgroup) in the cgroup
    mounts `mountinfo` lists, under `root` (that process's /proc/<pid>/root). A hierarchy with
    no mount there cannot be joined: CallerUnknown."""
    mounts = _cgroup_mounts(mountinfo)
    files = []
    for line in lines:
        number, controllers, path = line.split(":", 2)
        wanted: str | frozenset = CGROUP_V2
        if number != "0" or controllers:
            wanted = frozenset(controllers.split(","))
        found = _find_mount(mounts, wanted, path)
        if found is None:
            raise CallerUnknown(0, f"cgroup hierarchy {controllers or CGROUP_V2} not mounted")
        files.append(os.path.join(root, found.lstrip("/")))
    return files


def _cgroup_mounts(mountinfo: str) -> list:
    """(kind, root, mount point) of each cgroup mount: kind is CGROUP_V2, or for a v1 hierarchy
    the set of its controllers (and name=...) from the super options."""
    mounts: list = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            separator = fields.index("-")
            fstype, options = fields[separator + 1], fields[separator + 3].split(",")
            root, point = _unescape(fields[3]), _unescape(fields[4])
            if fstype == "cgroup2":
                mounts.append((CGROUP_V2, root, point))
            elif fstype == "cgroup":
                mounts.append((frozenset(options) - {"rw", "ro"}, root, point))
    return mounts


def _find_mount(mounts: list, wanted, path: str) -> str | None:
    for kind, root, point in mounts:
        matches = kind == wanted if wanted == CGROUP_V2 else kind != CGROUP_V2 and wanted <= kind
        if not matches:
            continue
        # A mount of a sub-tree (a container's view) holds only the paths under its root.
        relative = os.path.relpath(path, root)
        if relative == ".." or relative.startswith("../"):
            continue
        return os.path.normpath(os.path.join(point, relative, "cgroup.procs"))
    return None


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return text.encode().decode("unicode_escape") if "\\" in text else text
