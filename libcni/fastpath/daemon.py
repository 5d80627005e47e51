"""The pycni daemon: a server with every plugin preloaded and a pool of pre-forked workers
(the server side of libcni.fastpath.client).

Start-up of a Python plugin is the interpreter plus its imports, paid on every exec. This
process pays the imports once (pyroute2 is left out: no plugin's hot path needs it, so the
server stays small and each fork cheap) and keeps a pool of workers forked ahead of time, each
waiting in accept() on the socket (libcni.fastpath.worker). A worker serves one call and exits;
the moment it accepts, it tells the server, which forks its replacement. The server itself only
forks and waits: it never reads a request nor runs plugin code, so a crashing worker or a
malformed request cannot take it down, and callers never queue behind a slow one.

It exits when a caller runs a newer program installed over its own (the upgrade: the socket
starts the new one); a caller of another install on the node is refused and runs its plugin
itself, and the daemon goes on serving its own.

Security: the socket lives in a root-only directory and every peer's credentials are checked
(SO_PEERCRED): only the daemon's own uid may submit calls.
"""

import gc
import os
import select
import signal
import socket
import stat
import sys
import time
from typing import Any

from libcni.fastpath import caller as callers
from libcni.fastpath import client as fastpath
from libcni.fastpath import worker as workers

# The server's nice value: it only forks, and on a busy node it must not wait for the CPU
# behind the workers it started (each worker takes on its caller's).
SERVER_NICE = -10
TAKEOVER_WAIT = 2.0  # seconds a socket must stay live before a new daemon gives up on it
# Imported up front so that workers start with them loaded.
PRELOAD = (
    "ipaddress",
    "subprocess",
    "json",
    "hashlib",
    "struct",
    "libcni.kernel.session",
    "libcni.runtime.netlist",
    "libcni.protocol.calllog",
)


class DaemonError(Exception):
    """Why the daemon cannot start, in words for the operator."""


def pool_size() -> int:
    """Workers kept ready: four per CPU, 8 to 32 (a pod's list runs its plugins one after
    another, so one pod needs one at a time; more arrive at once on pod churn). An idle worker
    shares the server's memory (copy-on-write) and costs no CPU."""
    return min(32, max(8, 4 * (os.cpu_count() or 1)))


class _Exit(BaseException):
    """SIGTERM or SIGINT in the server: stop serving."""


def _stop(_signum, _frame):
    raise _Exit


class Server:
    def __init__(self, plugins: dict, listener, verbose: bool = False, size: int = 0):
        self.plugins = dict(plugins)  # executable name -> module name
        self.listener = listener
        self.build = fastpath.build_id()
        self.verbose = verbose
        self.trace = False  # log each worker's exit time (benchmarks/phases.py)
        self.size = size or pool_size()
        self.pid = os.getpid()
        self.cgroups = callers.own_cgroups()  # workers start in these
        self.limits = callers.own_limits()  # and with these
        self.libc: Any = None  # ctypes.CDLL of libc, loaded by preload()
        self.channel: Any = None  # the workers' end of the datagram socket to the server
        # With --warm-cgroups, descriptors of the cgroups the last caller that needed a move
        # was in: each new worker moves there while idle (libcni.fastpath.caller.join_ahead),
        # so that the next call from a runtime in those cgroups costs no cgroup move. The
        # price: idle workers count in that cgroup (pids, the memory they touch) and keep it
        # from being removed, so it is for runtimes in a long-lived cgroup of their own.
        self.warm_cgroups = False
        self.warm: list = []
        self.poller: Any = None

    def preload(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        for module in PRELOAD:
            try:
                __import__(module)
            except ImportError as err:
                workers.log(f"cannot preload {module}: {err}")
        for name, module in list(self.plugins.items()):
            try:
                __import__(module)
            except Exception as err:  # serve the others; callers of this one run in-process
                workers.log(f"cannot load {name} ({module}): {err!r}")
                del self.plugins[name]
        # Everything loaded so far lives as long as we do: keep the collector out of it, so a
        # worker's collections never walk (and copy-on-write fault in) the server's objects.
        gc.collect()
        gc.freeze()

    def setns(self, fd: int, kind: int) -> None:
        """setns() through ctypes (Python 3.11 has no os.setns)."""
        if self.libc.setns(fd, kind) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    def serve_forever(self) -> None:
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) > SERVER_NICE:
                os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICE)
        except OSError:  # without CAP_SYS_NICE: serve at the priority we were given
            pass
        self.limits = callers.own_limits()
        # Workers are reaped by the kernel; the server watches them through pidfds.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        news_socket, self.channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        news_socket.setblocking(False)
        news = news_socket.fileno()
        idle: dict = {}  # pid -> pidfd of a worker waiting for a call
        exiting: dict = {}  # with --trace: pidfd -> (pid, when it said it was exiting)
        poller = self.poller = select.poll()
        poller.register(news, select.POLLIN)
        try:
            while True:
                while len(idle) < self.size:
                    pid, pidfd = self._fork()
                    idle[pid] = pidfd
                    poller.register(pidfd, select.POLLIN)
                by_fd = {fd: pid for pid, fd in idle.items()}
                ready = [fd for fd, _ in poller.poll()]
                if news in ready and self._read_news(news_socket, idle, exiting):
                    return
                for fd in ready:
                    if fd in exiting:  # a worker that took a call is gone (--trace)
                        pid, said = exiting.pop(fd)
                        poller.unregister(fd)
                        os.close(fd)
                        if said:
                            gone = (time.monotonic_ns() - said) / 1e6
                            workers.log(f"worker {pid} exited {gone:.2f} ms after its status")
                    elif fd in by_fd and by_fd[fd] in idle:  # an idle worker died: replace it
                        idle.pop(by_fd[fd], None)
                        poller.unregister(fd)
                        os.close(fd)
        finally:
            news_socket.close()
            self.channel.close()

    def _fork(self) -> tuple:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            workers.Worker(self).run()  # never returns
        return pid, os.pidfd_open(pid)

    def _read_news(self, news, idle: dict, exiting: dict) -> bool:
        """Take in the workers' records; True when the server must exit (an upgrade)."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(news, workers.RECORD.size, 16)
            except BlockingIOError:
                return False
            if len(data) != workers.RECORD.size:
                for fd in fds:
                    os.close(fd)
                continue
            if self._take(workers.RECORD.unpack(data), fds, idle, exiting):
                return True

    def _take(self, record: tuple, fds: list, idle: dict, exiting: dict) -> bool:
        """One worker's record; True when the server must exit."""
        pid, what, when = record
        if what == workers.CALLER_CGROUPS and self.warm_cgroups:
            for fd in self.warm:
                os.close(fd)
            for fd in fds:
                os.set_inheritable(fd, False)
            self.warm = fds
            for worker in idle:  # the ones forked before: a move now, once per new place
                callers.join_ahead(fds, worker)
            return False
        for fd in fds:
            os.close(fd)
        if what == workers.TOOK_A_CALL:
            pidfd = idle.pop(pid, None)
            if pidfd is not None:
                if self.trace:
                    exiting[pidfd] = (pid, 0)  # still watched: its exit is timed
                else:
                    self.poller.unregister(pidfd)
                    os.close(pidfd)
        elif what == workers.EXITING:
            for pidfd, (known, _) in exiting.items():
                if known == pid:
                    exiting[pidfd] = (pid, when)
        elif what == workers.UPGRADED:
            workers.log("the installed program changed: exiting so the new one is started")
            return True
        return False


def _listener(path: str) -> tuple:
    """(listening socket, whether systemd passed it): inherited from systemd (socket
    activation: pycni.socket) or created here, never taken from a daemon that serves it."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # for no child to take them as its own
        listener = socket.socket(fileno=3)
        os.set_inheritable(listener.fileno(), False)
        return listener, True
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        _take_over(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        global _bound
        _bound = os.stat(path).st_ino
    except OSError as err:
        raise DaemonError(f"cannot listen on {path}: {err.strerror or err}") from None
    listener.listen(128)
    return listener, False


_bound = 0  # the inode of the socket file we created (removed on exit if still ours)


def _take_over(path: str) -> None:
    """Remove a stale socket file at `path` (nobody accepts on it); refuse a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket: remove it or choose another path")
    # A daemon that just exited (an upgrade) leaves idle workers that still hold the listening
    # socket until its death signal reaches them: only a socket that stays live counts.
    deadline = time.monotonic() + TAKEOVER_WAIT
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # left by a daemon that is gone
            return
        finally:
            probe.close()
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise DaemonError(
        f"another pycni-daemon already serves {path}: stop it first, or give this one "
        "another socket path (the plugins find it through $PYCNI_SOCKET)"
    )


USAGE = "pycni-daemon [--verbose] [--workers N] [--warm-cgroups] [--trace] [SOCKET]"
DESCRIPTION = (
    "pycni's daemon: every plugin preloaded and a pool of pre-forked workers, each serving "
    "one plugin call handed over by the plugins' front door, in the caller's namespaces. "
    "Normally started by systemd (pycni.socket); a plugin works the same without it."
)


def parse_arguments(argv: list):
    import argparse

    parser = argparse.ArgumentParser(prog="pycni-daemon", usage=USAGE, description=DESCRIPTION)
    parser.add_argument(
        "socket",
        nargs="?",
        metavar="SOCKET",
        help=f"socket path (default: $PYCNI_SOCKET, else {fastpath.DEFAULT_SOCKET}); ignored "
        "when systemd passes the socket",
    )
    parser.add_argument("--verbose", action="store_true", help="log every call and refusal")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help=f"pre-forked workers kept ready (default: four per CPU, 8-32; here {pool_size()})",
    )
    parser.add_argument(
        "--warm-cgroups",
        action="store_true",
        help="keep idle workers in the cgroups of the last caller that needed a cgroup move, "
        "so the next call from there needs none (idle workers then count in that cgroup and "
        "keep it from being removed: for a runtime in a long-lived cgroup of its own)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="log how long each worker takes to exit"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.workers > 1024:
        parser.error("--workers must be between 1 and 1024")
    return args


def main(plugins: dict) -> int:
    """`pycni-daemon [--verbose] [--workers N] [--trace] [SOCKET]`: serve plugin calls until
    stopped or the installed program changes."""
    args = parse_arguments(sys.argv[1:])
    if args.version:
        from libcni import PYCNI_VERSION

        print(f"pycni-daemon {PYCNI_VERSION}")
        return 0
    path = args.socket or fastpath.socket_path()
    try:
        listener, activated = _listener(path)
    except DaemonError as err:
        print(f"pycni-daemon: {err}", file=sys.stderr)
        return 1
    server = Server(plugins, listener, verbose=args.verbose, size=args.workers)
    server.trace = args.trace
    server.warm_cgroups = args.warm_cgroups
    signal.signal(signal.SIGTERM, _stop)  # a clean exit: the socket file removed
    signal.signal(signal.SIGINT, _stop)
    try:
        server.preload()
        workers.log(f"serving {len(plugins)} programs on {path} ({server.size} workers)")
        server.serve_forever()
    except (_Exit, KeyboardInterrupt):
        pass
    finally:
        if os.getpid() == server.pid and not activated:
            try:
                if os.stat(path).st_ino == _bound:
                    os.unlink(path)
            except OSError:
                pass
    return 0
