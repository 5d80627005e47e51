"""Our plugin-to-daemon protocol over the daemon's unix socket (not upstream's Go net/rpc: both
halves ship in the same executable, so a Go daemon cannot serve our plugin and vice versa).

One request per connection: the client sends one JSON object and a newline,
`{"protocol": 1, "method": "allocate", "params": {...}}`; the daemon answers one JSON object and
a newline, `{"result": {...}}` or `{"error": {"code": N, "msg": "...", "details": "..."}}`,
then closes. Methods: allocate, check, release, gc, status. The client side uses only `_socket`
and json: it runs in every short-lived plugin exec.
"""

import json

from libcni.protocol.errors import INTERNAL, CNIError

PROTOCOL = 1
DEFAULT_SOCKET = "/run/cni/dhcp.sock"
AF_UNIX, SOCK_STREAM, SOCK_CLOEXEC = 1, 1, 0o2000000
MAX_MESSAGE = 1 << 20


class DaemonUnreachable(CNIError):
    """Nothing answers on the socket: DEL treats this as nothing left to release."""


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
                "start it with `dhcp daemon` (systemd: cni-dhcp.socket), or set the ipam "
                "daemonSocketPath to where it listens",
            ) from None
        try:
            sock.sendall(encode({"protocol": PROTOCOL, "method": method, "params": params}))
            reply = decode(_read_line(sock))
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
