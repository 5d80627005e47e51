"""The pycni daemon: a fork-server with every plugin preloaded (the server side of
libcni.fastpath.client).

Start-up of a Python plugin is the interpreter plus its imports, paid on every exec. This
process pays the imports once; pyroute2 is left out, since no plugin's hot path needs it, so
the server stays small and each fork stays cheap. For each call it forks a worker that takes
over the caller's stdin/stdout/stderr, enters the caller's mount and network namespaces and
cwd, adopts its argv and environment, and runs the same plugin code an exec would have run;
the worker sends the exit status back and exits. The server itself stays single-threaded and
does no plugin work, so a crashing worker or a malformed request cannot take it down.

Security: the socket lives in a root-only directory and every peer's credentials are checked
(SO_PEERCRED): only the daemon's own uid may submit calls.
"""

import os
import signal
import socket
import struct
import sys

from libcni.fastpath import client as fastpath
from libcni.kernel.netns import CLONE_NEWNET
from libcni.protocol import skel

CLONE_NEWNS = 0x00020000
MAX_HEADER = 1 << 20
# The server reads requests one at a time: a client that stalls mid-request must not block it.
REQUEST_TIMEOUT = 2.0
# Imported up front so that workers start with them loaded.
PRELOAD = (
    "ipaddress", "subprocess", "json", "hashlib", "struct",
    "libcni.kernel.rtnl", "libcni.runtime.netlist",
)


def _log(message: str) -> None:
    print(f"pycni-daemon[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _recv_request(conn):
    """Read the length-prefixed JSON header and the passed fds; None when malformed."""
    msg, fds, _, _ = socket.recv_fds(conn, 65536, 16)
    prefix = struct.calcsize(fastpath.LENGTH_FORMAT)
    if len(msg) < prefix:
        return None, fds
    (length,) = struct.unpack_from(fastpath.LENGTH_FORMAT, msg)
    if length > MAX_HEADER:
        return None, fds
    data = msg[prefix:]
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            return None, fds
        data += chunk
    request = fastpath.decode_header(data)
    if request is None or len(fds) != 6:
        return None, fds
    return request, fds


def _peer_uid(conn) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Server:
    def __init__(self, plugins: dict, listener, verbose: bool = False):
        self.plugins = dict(plugins)  # executable name -> module name
        self.listener = listener
        self.build = fastpath.build_id()
        self.served = 0
        self.verbose = verbose

    def preload(self) -> None:
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

    def serve_forever(self) -> None:
        # Workers are reaped by the kernel; the server never waits for them.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        while True:
            conn, _ = self.listener.accept()
            try:
                if self.handle(conn) == "exit":
                    _log("code on disk changed: exiting so the new build can be started")
                    return
            except Exception as err:  # a bad request must never stop the server
                _log(f"request failed: {err!r}")
            finally:
                conn.close()

    def handle(self, conn):
        fds: list = []
        try:
            if _peer_uid(conn) != os.getuid():
                _log("refused a caller with another uid")
                conn.sendall(fastpath.REFUSED)
                return None
            conn.settimeout(REQUEST_TIMEOUT)
            request, fds = _recv_request(conn)
            conn.settimeout(None)
            if request is None or request.get("protocol") != fastpath.PROTOCOL:
                conn.sendall(fastpath.REFUSED)
                return None
            if request.get("build") != self.build:
                conn.sendall(fastpath.REFUSED)
                return "exit"
            if request.get("name") not in self.plugins:
                conn.sendall(fastpath.REFUSED)
                return None
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                self._worker(conn, request, fds)  # never returns
            self.served += 1
            if self.verbose:
                command = request.get("env", {}).get("CNI_COMMAND", "")
                _log(f"worker {pid}: {request['name']} {command}")
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def _worker(self, conn, request: dict, fds: list) -> None:
        status = 70
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # plugins wait for their children
            self.listener.close()
            stdin, stdout, stderr, net_fd, mnt_fd, cwd_fd = fds
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                os.dup2(fd, target)
            _setns(mnt_fd, CLONE_NEWNS)
            _setns(net_fd, CLONE_NEWNET)
            os.fchdir(cwd_fd)
            for fd in fds:
                os.close(fd)
            sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the caller's streams
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.environ.clear()
            os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
            name = request["name"]
            sys.argv = [name, *request.get("argv", [])]
            status = skel.main(sys.modules[self.plugins[name]].PLUGIN)
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else 1
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
            try:
                conn.sendall(fastpath.STATUS + struct.pack("!i", int(status or 0)))
            except Exception:
                pass
            os._exit(int(status or 0) & 0xFF)


def _setns(fd: int, kind: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _listener(path: str):
    """The listening socket: inherited from systemd (socket activation) or created here."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=3)
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
    return listener


def main(plugins: dict) -> int:
    """`pycni-daemon [--verbose] [SOCKET]`: serve plugin calls until the code on disk changes."""
    args = [a for a in sys.argv[1:] if a != "--verbose"]
    path = args[0] if args else fastpath.socket_path()
    server = Server(plugins, _listener(path), verbose="--verbose" in sys.argv[1:])
    server.preload()
    _log(f"serving {len(plugins)} programs on {path}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if os.path.exists(path) and not os.environ.get("LISTEN_FDS"):
            os.unlink(path)
    return 0
