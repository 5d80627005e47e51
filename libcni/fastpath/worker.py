"""One pre-forked worker of the pycni daemon (libcni.fastpath.daemon): it waits in accept() on
the daemon's socket, serves the one call it gets, and exits.

Ready before the call arrives: the server forks it ahead of time, so a call waits for no
fork. Once it has a connection it tells the server (which forks its replacement at once, so a
slow call holds up nobody but its caller), reads the request, takes on the caller
(libcni.fastpath.caller), enters the caller's mount and network namespaces and cwd, takes its
streams, argv and environment, and runs the same plugin code an exec would have run; then it
sends the exit status and exits, so nothing of one call is left for another.

Lifetimes without a thread: an idle worker dies with the server (PR_SET_PDEATHSIG), so no
worker of an old server accepts calls after it; a serving worker outlives the server (its call
completes) but dies with its caller: the connection is set to signal SIGIO to the worker's
process group when the caller hangs up (O_ASYNC), and SIGIO's default action ends the worker
and whatever it started, as a runtime's kill of an exec'd plugin would.
"""

import fcntl
import os
import select
import signal
import socket
import struct
import sys
import time

from libcni.fastpath import caller as callers
from libcni.fastpath import client as fastpath
from libcni.kernel.netns import CLONE_NEWNET
from libcni.protocol import phases, skel

CLONE_NEWNS = 0x00020000
PR_SET_PDEATHSIG = 1
MAX_HEADER = 1 << 20
# A worker gives up on a request that stalls this long between two reads, or takes longer in
# all (it only ever holds up its own caller).
REQUEST_TIMEOUT = 2.0
REQUEST_DEADLINE = 10.0
# What a worker tells the server over its pipe: (pid, what, CLOCK_MONOTONIC ns) records.
RECORD = struct.Struct("=iiq")
TOOK_A_CALL, UPGRADED, EXITING, CALLER_CGROUPS = 1, 2, 3, 4
# Process names (ps, /proc/<pid>/comm): a pool worker waiting, and one serving a call.
IDLE_NAME, SERVING_NAME = b"pycni-idle", b"pycni-call"


def log(message: str) -> None:
    print(f"pycni-daemon[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def tell(channel, what: int, fds: list | None = None) -> None:
    """One record to the server over the datagram socket `channel`, with descriptors."""
    try:
        socket.send_fds(channel, [RECORD.pack(os.getpid(), what, time.monotonic_ns())], fds or [])
    except OSError:  # the server is gone: nothing to tell
        pass


def _name(name: bytes) -> None:
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(name)
    except OSError:
        pass


class Worker:
    """The state a worker inherits from the server: what it serves and how to reach it."""

    def __init__(self, server) -> None:
        self.server = server

    def run(self) -> None:
        """In the forked child: wait for one call, serve it, exit. Never returns."""
        server = self.server
        status = 0
        try:
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGIO):
                signal.signal(signum, signal.SIG_DFL)
            server.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != server.pid:  # the server died before we asked to die with it
                os._exit(0)
            os.setpgid(0, 0)  # what the plugin starts dies with it (die_with_the_caller)
            if server.warm:  # off the call's path: the cgroup move is the costly step
                callers.join_ahead(server.warm, os.getpid())
            _name(IDLE_NAME)
            conn, _ = server.listener.accept()
            accepted = time.monotonic()
            server.libc.prctl(PR_SET_PDEATHSIG, 0)  # the call completes without the server
            server.listener.close()
            _name(SERVING_NAME)
            status = self.serve(conn, accepted)
        except BaseException as err:  # report, never fall back into the server's code
            try:
                log(f"worker failed: {err!r}")
            except Exception:
                pass
            status = 70
        os._exit(status & 0xFF)

    def serve(self, conn, accepted: float) -> int:
        server = self.server
        status = 70
        admitted = None
        try:
            admitted = self.admit(conn)
            if admitted is None:
                return 0
            request, fds, caller = admitted
            name = request["name"]
            if server.verbose:
                log(f"worker {os.getpid()}: {name} {request['env'].get('CNI_COMMAND', '')}")
            phases.mark("accepted", accepted)
            phases.mark("admitted")
            stdin, stdout, stderr, net_fd, mnt_fd, cwd_fd = fds
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                os.dup2(fd, target)
            server.setns(mnt_fd, CLONE_NEWNS)
            server.setns(net_fd, CLONE_NEWNET)
            os.fchdir(cwd_fd)
            for fd in fds:
                os.close(fd)
            phases.mark("entered")
            die_with_the_caller(conn)
            sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the caller's streams
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = [name, *request["argv"]]
            plugin = sys.modules[server.plugins[name]].PLUGIN
            caller.apply_limits()
            phases.held = []
            status = skel.main(plugin)
        except SystemExit as exited:
            status = exited.code if isinstance(exited.code, int) else 1
        except BaseException as err:
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
            if admitted is not None:
                live_without_the_caller(conn)
                try:
                    conn.sendall(fastpath.STATUS + struct.pack("!i", int(status or 0)))
                except Exception:
                    pass
                write_held_log_lines()
                if server.trace:
                    tell(server.channel, EXITING)
        return int(status or 0)

    def admit(self, conn):
        """Read and check the request and take on the caller: (request, fds, caller), or None
        after refusing (nothing was done: the client runs the plugin itself)."""
        server = self.server
        fds: list = []
        loud = server.verbose
        # The server forks our replacement once told. A request already sent (the front door
        # sends it at once) is read first, so that fork does not run in between; a slow
        # client's worker tells at once, so the pool never waits for it.
        waiting = select.poll()
        waiting.register(conn.fileno(), select.POLLIN)
        told = not waiting.poll(0)
        if told:
            tell(server.channel, TOOK_A_CALL)
        try:
            pid, uid = peer(conn)
            if uid != os.getuid():
                reason, loud = "a caller with another uid", True
            else:
                # The front door sent it before we accepted: reading it waits for nothing.
                request, fds = recv_request(conn, time.monotonic() + REQUEST_DEADLINE)
                if not told:
                    told = True
                    tell(server.channel, TOOK_A_CALL)
                if request is not None:
                    phases.begin(request["env"])
                    request["env"].pop(phases.ORIGIN_VARIABLE, None)
                    phases.mark("request")
                if request is None or request.get("protocol") != fastpath.PROTOCOL:
                    reason = "a malformed request"
                elif request.get("build") != server.build:
                    reason, loud = f"build {request.get('build')!r}", True
                    if fastpath.build_id() != server.build:  # our own program changed on disk
                        reason += ": the installed program changed, exiting for the new one"
                        tell(server.channel, UPGRADED)
                    else:  # another install's program: it runs itself
                        reason += " (another install): its caller runs the plugin itself"
                elif request.get("name") not in server.plugins:
                    reason = f"unknown program {request.get('name')!r}"
                else:
                    # Our cgroups now (the server may have moved us while we waited).
                    here = callers.own_cgroups() if server.warm_cgroups else server.cgroups
                    caller = callers.read(pid, here, server.limits, umask=request.get("umask"))
                    joined = caller.join_cgroups(keep=server.warm_cgroups)
                    if joined:  # the next worker waits there
                        tell(server.channel, CALLER_CGROUPS, joined)
                    for fd in joined:
                        os.close(fd)
                    return request, fds, caller
        except OSError as err:  # a late request, a caller we cannot follow
            reason = str(err)
        finally:
            if not told:
                tell(server.channel, TOOK_A_CALL)
        if loud:
            log(f"refused {reason}")
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(fastpath.REFUSED)
        except OSError:
            pass
        return None


def peer(conn) -> tuple:
    """(pid, uid) of the process at the other end (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def recv_request(conn, deadline: float):
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


def die_with_the_caller(conn) -> None:
    """From now until the status is sent, the caller's hang-up (a runtime's timeout, kill -9)
    ends this worker and what it started: the kernel signals SIGIO to our process group when
    the connection's state changes, and nothing handles SIGIO. A hang-up that came before we
    asked is seen by the poll."""
    fd = conn.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, -os.getpgid(0))
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if poller.poll(0):  # hung up (or sent more than a request, which no caller does)
        os.killpg(0, signal.SIGKILL)


def live_without_the_caller(conn) -> None:
    try:
        fd = conn.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_ASYNC)
    except OSError:
        pass


def write_held_log_lines() -> None:
    """The call-log lines held back for the trace, now with the status's time."""
    if not phases.held:
        return
    sent = phases.elapsed(statusSent=time.monotonic())["statusSent"]
    from libcni.protocol import calllog

    for path, line, max_size in phases.held:
        line["phases"]["statusSent"] = sent
        try:
            calllog.append(path, calllog.json.dumps(line, separators=(",", ":")) + "\n", max_size)
        except Exception as err:
            log(f"call log {path} not written: {err}")
    phases.held = None
