"""The pycni daemon: a fork-server with every plugin preloaded (the server side of
libcni.fastpath.client).

Start-up of a Python plugin is the interpreter plus its imports, paid on every exec. This
process pays the imports once; pyroute2 is left out, since no plugin's hot path needs it, so
the server stays small and each fork stays cheap. For each call it forks a worker that takes
over the caller's stdin/stdout/stderr, enters the caller's mount and network namespaces and
cwd, adopts its argv and environment, and runs the same plugin code an exec would have run;
the worker sends the exit status back and exits. The server itself stays single-threaded and
does no plugin work, so a crashing worker or a malformed request cannot take it down; it only
accepts and forks, and each worker reads its own request, so callers never queue behind a
slow one.

A worker is the caller's plugin process in all that matters: it takes on the caller's umask,
resource limits and cgroups (libcni.fastpath.caller), and it dies when the caller's connection
closes before the status was sent (a runtime's timeout, kill -9), as an exec'd plugin would.

Security: the socket lives in a root-only directory and every peer's credentials are checked
(SO_PEERCRED): only the daemon's own uid may submit calls.
"""

import gc
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

from libcni.fastpath import caller as callers
from libcni.fastpath import client as fastpath
from libcni.kernel.netns import CLONE_NEWNET
from libcni.protocol import skel

CLONE_NEWNS = 0x00020000
MAX_HEADER = 1 << 20
# A worker gives up on a request that stalls this long between two reads, or takes longer in
# all (it only ever holds up its own caller).
REQUEST_TIMEOUT = 2.0
REQUEST_DEADLINE = 10.0
# The server's nice value: it only accepts and forks, and on a busy node it must not wait for
# the CPU behind the workers it started (each worker takes on its caller's).
SERVER_NICE = -10
# Imported up front so that workers start with them loaded.
PRELOAD = (
    "ipaddress",
    "subprocess",
    "json",
    "hashlib",
    "struct",
    "libcni.kernel.rtnl",
    "libcni.runtime.netlist",
)


def _log(message: str) -> None:
    print(f"pycni-daemon[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _recv_request(conn, deadline: float):
    """Read the length-prefixed header and the passed fds; None when malformed or late."""
    conn.settimeout(REQUEST_TIMEOUT)
    msg, fds, _, _ = socket.recv_fds(conn, 65536, 16)
    prefix = struct.calcsize(fastpath.LENGTH_FORMAT)
    if len(msg) < prefix:
        return None, fds
    (length,) = struct.unpack_from(fastpath.LENGTH_FORMAT, msg)
    if length > MAX_HEADER:
        return None, fds
    data = msg[prefix:]
    while len(data) < length:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, fds
        conn.settimeout(min(REQUEST_TIMEOUT, left))
        chunk = conn.recv(length - len(data))
        if not chunk:
            return None, fds
        data += chunk
    conn.settimeout(None)
    request = fastpath.decode_header(data)
    if request is None or len(fds) != 6:
        return None, fds
    return request, fds


def _peer(conn) -> tuple:
    """(pid, uid) of the process at the other end (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class _StaleBuild(BaseException):
    """Raised in the server (SIGUSR1 from a worker): a caller runs another build of pycni."""


def _stale(_signum, _frame):
    raise _StaleBuild


def _die_with_the_caller(conn, done: threading.Event) -> None:
    """Kill this worker and what it started when the caller hangs up before the status was
    sent: the call ends with its caller, as an exec'd plugin killed by its runtime does."""
    leader = os.getpgid(0) == os.getpid()  # our own group (never the server's)

    def watch() -> None:
        poller = select.poll()
        poller.register(conn.fileno(), 0)  # hang-up and errors are always reported
        poller.poll()
        if not done.is_set():
            if leader:
                os.killpg(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="caller-watch", daemon=True).start()


class Server:
    def __init__(self, plugins: dict, listener, verbose: bool = False):
        self.plugins = dict(plugins)  # executable name -> module name
        self.listener = listener
        self.build = fastpath.build_id()
        self.served = 0
        self.verbose = verbose
        self.pid = os.getpid()
        self.cgroups = callers.own_cgroups()  # workers start in these

    def preload(self) -> None:
        _load_libc()
        for module in PRELOAD:
            try:
                __import__(module)
            except ImportError as err:
                _log(f"cannot preload {module}: {err}")
        for name, module in list(self.plugins.items()):
            try:
                __import__(module)
            except Exception as err:  # serve the others; callers of this one run in-process
                _log(f"cannot load {name} ({module}): {err!r}")
                del self.plugins[name]
        # Everything loaded so far lives as long as we do: keep the collector out of it, so a
        # worker's collections never walk (and copy-on-write fault in) the server's objects.
        gc.collect()
        gc.freeze()

    def serve_forever(self) -> None:
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) > SERVER_NICE:
                os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICE)
        except OSError:  # without CAP_SYS_NICE: serve at the priority we were given
            pass
        # Workers are reaped by the kernel; the server never waits for them.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, _stale)
        try:
            while True:
                conn, _ = self.listener.accept()
                try:
                    self.handle(conn)
                except Exception as err:  # a bad request must never stop the server
                    _log(f"request failed: {err!r}")
                finally:
                    conn.close()
        except _StaleBuild:
            _log("a caller runs another build: exiting so the new build can be started")

    def handle(self, conn) -> None:
        """Check who calls and fork a worker to read and run the call: nothing here waits."""
        pid, uid = _peer(conn)
        if uid != os.getuid():
            _log("refused a caller with another uid")
            conn.sendall(fastpath.REFUSED)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            self._worker(conn, pid)  # never returns
        self.served += 1

    def _admit(self, conn, peer_pid: int):
        """Read and check the request and join the caller's cgroups: (request, fds, caller),
        or None after refusing (nothing was done: the client runs the plugin itself)."""
        fds: list = []
        stale = False
        try:
            request, fds = _recv_request(conn, time.monotonic() + REQUEST_DEADLINE)
            if request is None or request.get("protocol") != fastpath.PROTOCOL:
                reason = "a malformed request"
            elif request.get("build") != self.build:
                reason, stale = f"build {request.get('build')!r}", True
            elif request.get("name") not in self.plugins:
                reason = f"unknown program {request.get('name')!r}"
            else:
                caller = callers.read(peer_pid, self.cgroups)
                caller.join_cgroups()
                return request, fds, caller
        except OSError as err:  # a late request, a caller we cannot follow
            reason = str(err)
        if self.verbose or stale:
            _log(f"refused {reason}")
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(fastpath.REFUSED)
        except OSError:
            pass
        if stale and os.getppid() == self.pid:
            os.kill(self.pid, signal.SIGUSR1)
        return None

    def _worker(self, conn, peer_pid: int) -> None:
        status = 70
        done = threading.Event()
        admitted = None
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # plugins wait for their children
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            self.listener.close()
            os.setpgid(0, 0)  # what the plugin starts dies with it (_die_with_the_caller)
            admitted = self._admit(conn, peer_pid)
            if admitted is None:
                os._exit(0)
            request, fds, caller = admitted
            name = request["name"]
            if self.verbose:
                command = request["env"].get("CNI_COMMAND", "")
                _log(f"worker {os.getpid()}: {name} {command}")
            stdin, stdout, stderr, net_fd, mnt_fd, cwd_fd = fds
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                os.dup2(fd, target)
            _setns(mnt_fd, CLONE_NEWNS)
            _setns(net_fd, CLONE_NEWNET)
            os.fchdir(cwd_fd)
            for fd in fds:
                os.close(fd)
            # A thread of its own: only now, a multithreaded process cannot enter a mount ns.
            _die_with_the_caller(conn, done)
            sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the caller's streams
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
            sys.argv = [name, *request.get("argv", [])]
            plugin = sys.modules[self.plugins[name]].PLUGIN
            caller.apply_limits()
            status = skel.main(plugin)
        except SystemExit as exited:
            status = exited.code if isinstance(exited.code, int) else 1
        except BaseException as err:  # report, never fall back into the server loop
            try:
                print(f"pycni daemon worker: {err!r}", file=sys.stderr)
            except Exception:
                pass
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            done.set()
            if admitted is not None:
                try:
                    conn.sendall(fastpath.STATUS + struct.pack("!i", int(status or 0)))
                except Exception:
                    pass
            os._exit(int(status or 0) & 0xFF)


_libc = None


def _load_libc():
    """setns() through ctypes (Python 3.11 has no os.setns), loaded once in the server."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _setns(fd: int, kind: int) -> None:
    import ctypes

    if _load_libc().setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _listener(path: str) -> tuple:
    """(listening socket, whether systemd passed it): inherited from systemd (socket
    activation: pycni.socket) or created here."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # for no child to take them as its own
        listener = socket.socket(fileno=3)
        os.set_inheritable(listener.fileno(), False)
        return listener, True
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(128)
    return listener, False


def main(plugins: dict) -> int:
    """`pycni-daemon [--verbose] [SOCKET]`: serve plugin calls until the code on disk changes."""
    args = [a for a in sys.argv[1:] if a != "--verbose"]
    path = args[0] if args else fastpath.socket_path()
    listener, activated = _listener(path)
    server = Server(plugins, listener, verbose="--verbose" in sys.argv[1:])
    server.preload()
    _log(f"serving {len(plugins)} programs on {path}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if os.path.exists(path) and not activated:
            os.unlink(path)
    return 0
