"""Our plugin-to-daemon protocol over the daemon's unix socket (not upstream's Go net/rpc: both
halves ship in the same executable, so a Go daemon cannot serve our plugin and vice versa).

Our default socket is /run/pycni/dhcp.sock, not upstream's /run/cni/dhcp.sock: that path belongs
to Debian's `cni-dhcp.socket` (the Go daemon). A plugin pointed at a daemon that speaks another
protocol (Go's net/rpc answers HTTP) gets a CNI error naming the socket and the fix, and DEL
treats it like an absent daemon (none of our leases live there).

One request per connection: the client sends one JSON object and a newline,
`{"protocol": 1, "method": "allocate", "params": {...}}`; the daemon answers one JSON object and
a newline, `{"result": {...}}` or `{"error": {"code": N, "msg": "...", "details": "..."}}`,
then closes. Methods: allocate, check, release, gc, status. The client side uses only `_socket`
and json: it runs in every short-lived plugin exec.
"""

import json

from libcni.protocol.errors import INTERNAL, CNIError

PROTOCOL = 1
DEFAULT_SOCKET = "/run/pycni/dhcp.sock"
UNIT = "pycni-dhcp.socket"
AF_UNIX, SOCK_STREAM, SOCK_CLOEXEC = 1, 1, 0o2000000
MAX_MESSAGE = 1 << 20


class DaemonUnreachable(CNIError):
    """Nothing answers on the socket: DEL treats this as nothing left to release."""


class ForeignDaemon(DaemonUnreachable):
    """Something answers on the socket, but not our dhcp daemon (e.g. upstream's Go daemon)."""


START_HINT = (
    f"start pycni's daemon with `systemctl enable --now {UNIT}` (it listens on "
    f"{DEFAULT_SOCKET}) or `dhcp daemon -socketpath PATH`, and set the ipam "
    "daemonSocketPath to where it listens"
)


def _foreign(socket_path: str, reply: bytes) -> ForeignDaemon:
    first = reply.split(b"\n", 1)[0].strip().decode("utf-8", "replace")[:80]
    if not reply:
        who = "it closed the connection without an answer"
    elif reply.startswith(b"HTTP/"):
        who = "it answered HTTP, as upstream's Go dhcp daemon (Debian's cni-dhcp.socket) does"
    else:
        who = f"it answered {first!r}"
    return ForeignDaemon(
        INTERNAL,
        f"the daemon on {socket_path} is not pycni's dhcp daemon: {who}",
        START_HINT,
    )


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("a message must be a JSON object")
    return obj


def _read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too long")
    return data


def call(socket_path: str, method: str, params: dict, timeout: float | None = None) -> dict:
    """Send one request and return the daemon's `result`; its `error` is raised as CNIError."""
    from _socket import socket

    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except OSError as err:
            reason = err.strerror or str(err)
            raise DaemonUnreachable(
                INTERNAL,
                f"error dialing DHCP daemon at {socket_path}: {reason[:1].lower() + reason[1:]}",
                START_HINT,
            ) from None
        try:
            sock.sendall(encode({"protocol": PROTOCOL, "method": method, "params": params}))
            line = _read_line(sock)
            try:
                reply = decode(line)
            except ValueError:
                raise _foreign(socket_path, line) from None
            # Go's net/rpc JSON codec answers {"id", "result", "error": "text"}.
            if "id" in reply or not ({"result", "error"} & reply.keys()):
                raise _foreign(socket_path, line)
        except TimeoutError:
            raise CNIError(
                INTERNAL, f"DHCP daemon at {socket_path} did not answer {method} in {timeout}s"
            ) from None
        except (OSError, ValueError) as err:
            raise CNIError(
                INTERNAL, f"error calling DHCP daemon at {socket_path} ({method}): {err}"
            ) from None
    finally:
        sock.close()
    error = reply.get("error")
    if isinstance(error, dict):
        raise CNIError(
            int(error.get("code") or INTERNAL),
            str(error.get("msg", "")),
            str(error.get("details", "")),
        )
    result = reply.get("result")
    return result if isinstance(result, dict) else {}
