"""Client side of the preloaded fast path: hand this plugin call to the pycni daemon if it runs.

The daemon (libcni.fastpath.daemon) has every plugin imported already and forks a worker per
call. We pass it our standard streams, our network and mount namespaces and our cwd as file
descriptors (SCM_RIGHTS), plus argv and the environment; the worker runs the plugin exactly as
this process would have, writing straight to our stdout/stderr, and sends back the exit status.
When there is no daemon (or it runs other code) the caller runs the plugin in-process: the
executable always works on its own. The client speaks with `_socket` and `struct` only and
encodes its header without json: this path runs before every forwarded plugin call.
"""

import os
import sys

DEFAULT_SOCKET = "/run/pycni/pycni.sock"
PROTOCOL = 2
LENGTH_FORMAT = "!I"  # the header's length prefix
AF_UNIX, SOCK_STREAM, SOCK_CLOEXEC, SOL_SOCKET, SCM_RIGHTS = 1, 1, 0o2000000, 1, 1

# Replies from the daemon.
STATUS = b"S"  # followed by a 4-byte signed exit status
# Refused before any work (another build on disk, a bad request): the client runs the plugin
# itself. A daemon running another build exits after refusing, to be restarted with new code.
REFUSED = b"X"


def socket_path(env=os.environ) -> str:
    # PYCNI_SOCKET exists for tests and for running a daemon somewhere unusual.
    return env.get("PYCNI_SOCKET") or DEFAULT_SOCKET


def build_id() -> str:
    """Identifies the code on disk: the frozen executable (or this source tree) and its version."""
    from libcni import PYCNI_VERSION

    anchor = sys.executable if getattr(sys, "frozen", False) else os.path.dirname(__file__)
    try:
        st = os.stat(anchor)
        stamp = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "?"
    # No path in it: the frozen programs are hard links of one file under different names.
    return f"{PYCNI_VERSION}:{stamp}"


def encode_header(
    protocol: int, build: str, name: str, argv: list, env, umask: int | None = None
) -> bytes:
    """NUL-separated key/value pairs: protocol, build, name, the caller's umask (octal; the
    worker reads /proc/<pid>/status without it), then one `argv` pair per argument and one
    `env` pair ("KEY=value") per variable. Neither argv nor the environment can hold a NUL,
    so no escaping is needed."""
    pairs = [("protocol", str(protocol)), ("build", build), ("name", name)]
    if umask is not None:
        pairs.append(("umask", f"{umask:o}"))
    pairs += [("argv", arg) for arg in argv]
    pairs += [("env", f"{key}={value}") for key, value in env.items()]
    return "".join(f"{key}\0{value}\0" for key, value in pairs).encode("utf-8", "surrogateescape")


def decode_header(data: bytes) -> dict | None:
    """The request dict of a header (None when malformed)."""
    words = data.decode("utf-8", "surrogateescape").split("\0")
    if len(words) % 2 != 1 or words[-1] != "":
        return None
    request: dict = {"argv": [], "env": {}}
    for key, value in zip(words[0:-1:2], words[1:-1:2], strict=True):
        if key == "argv":
            request["argv"].append(value)
        elif key == "env":
            name, sep, text = value.partition("=")
            if not sep:
                return None
            request["env"][name] = text
        elif key in ("protocol", "build", "name"):
            request[key] = int(value) if key == "protocol" and value.isdigit() else value
        elif key == "umask":
            if not value or len(value) > 4 or value.strip("01234567"):
                return None
            request["umask"] = int(value, 8)
        else:
            return None
    return request


def _recv_exactly(sock, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def forward(name: str, argv: list, env=os.environ) -> int | None:
    """Run plugin `name` in the daemon. Returns its exit status, or None to run in-process."""
    path = socket_path(env)
    if not os.path.exists(path):
        return None  # the common case without a daemon costs one stat()
    import struct
    from _socket import socket

    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
    opened = []
    sent = False
    try:
        # All prepared before we connect: the worker that accepts finds the request waiting.
        for ns_path in ("/proc/thread-self/ns/net", "/proc/thread-self/ns/mnt"):
            opened.append(os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC))
        opened.append(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        umask = os.umask(0)
        os.umask(umask)
        header = encode_header(PROTOCOL, build_id(), name, list(argv), env, umask)
        fds = [0, 1, 2, *opened]
        try:
            sock.connect(path)
        except OSError:
            return None  # a stale socket file: nobody listens
        sock.sendmsg(
            [struct.pack(LENGTH_FORMAT, len(header)) + header],
            [(SOL_SOCKET, SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))],
        )
        sent = True
        kind = _recv_exactly(sock, 1)
        if kind == STATUS:
            raw = _recv_exactly(sock, 4)
            if len(raw) == 4:
                return struct.unpack("!i", raw)[0]
        elif kind == REFUSED:
            return None  # refused before any work was done: run it ourselves
        _report_lost_worker(name)
        return 1
    except OSError:
        if not sent:
            return None
        _report_lost_worker(name)
        return 1
    finally:
        for fd in opened:
            os.close(fd)
        sock.close()


def _report_lost_worker(name: str) -> None:
    import json

    # The worker may have done part of the work, so running the plugin again here could repeat
    # it: report a CNI error instead and let the runtime retry (code 11: try again later).
    sys.stdout.write(
        json.dumps(
            {
                "code": 11,
                "msg": f"pycni daemon: the worker running {name} ended without an exit status",
                "details": "see the daemon's log; the runtime may retry",
            },
            indent=4,
        )
    )
    sys.stdout.flush()
