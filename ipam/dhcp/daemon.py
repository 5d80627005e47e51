"""`dhcp daemon`: holds the leases of every container interface that uses the dhcp IPAM.

Flags as upstream (Go flag syntax: `-name value`, `-name=value`, `--name`): -socketpath,
-pidfile, -hostprefix (prepended to the socket path and to every netns path), -broadcast,
-timeout, -resendmax, -resendtimeout; ours: -statedir (persisted leases). Listens on the unix
socket, or on the one systemd passes (LISTEN_FDS). Each connection is one request (rpc.py),
served in its own thread; each lease lives in its own thread (lease.py). SIGTERM or SIGINT
removes the socket and the pidfile; leases stay on disk, and the next daemon renews them.
"""

import logging
import os
import re
import signal
import socket
import sys
import threading

from ipam.dhcp import options, rpc
from ipam.dhcp.lease import Attachment, LeaseWorker, Settings
from ipam.dhcp.store import DEFAULT_DIR, LeaseStore
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError

LOG = logging.getLogger("dhcp")
SD_LISTEN_FDS_START = 3
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
FLAGS = {  # name: (default, kind, help)
    "pidfile": ("", str, "optional path to write daemon PID to"),
    "hostprefix": ("", str, "optional prefix to host root"),
    "socketpath": (rpc.DEFAULT_SOCKET, str, "dhcp daemon socket path"),
    "statedir": (DEFAULT_DIR, str, "directory of the persisted leases"),
    "broadcast": (False, bool, "broadcast DHCP leases"),
    "timeout": (10.0, float, "dhcp client timeout duration for each request"),
    "resendmax": (62.0, float, "dhcp client max resend delay between requests"),
    "resendtimeout": (208.0, float, "dhcp client resend timeout, no more retries after it"),
}


# Go's rpc.DialHTTP shows the status line to its caller: "unexpected HTTP response: 501 ...".
GO_CLIENT_ANSWER = (
    b"HTTP/1.0 501 this is pycni's dhcp daemon, which serves pycni's dhcp plugin only; "
    b"run upstream's daemon on another socket for upstream's plugin\r\n\r\n"
)


class UsageError(Exception):
    pass


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the forms people write: 10s, 1m30s, 500ms, 1.5h, 0."""
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f'invalid duration "{text}"')
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def parse_flags(argv: list) -> dict:
    values = {name: default for name, (default, _, _) in FLAGS.items()}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg in ("-", "--"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise UsageError("")
        if name not in FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        kind = FLAGS[name][1]
        if kind is bool:
            if has_value and value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise UsageError(f'invalid boolean value "{value}" for -{name}')
            values[name] = not has_value or value.lower() in ("1", "t", "true")
        else:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            values[name] = parse_duration(value) if kind is float else value
        i += 1
    return values


def usage() -> str:
    lines = ["Usage of daemon:"]
    for name, (default, kind, text) in FLAGS.items():
        lines.append(f"  -{name}" + ("" if kind is bool else " value"))
        lines.append(f"    \t{text} (default {default!r})")
    return "\n".join(lines)


def _require(params: dict, *names: str) -> list:
    values = []
    for name in names:
        value = params.get(name)
        if not isinstance(value, str) or (name != "network" and not value):
            raise CNIError(INVALID_NETWORK_CONFIG, f"bad request: {name!r} must be a string")
        values.append(value)
    return values


def _lease_options(params: dict) -> tuple:
    """(request codes, provide {code: hex}, priority) of an allocate request, checked."""
    request, provide, priority = (params.get(k) for k in ("request", "provide", "priority"))
    if not isinstance(request, list) or not all(
        isinstance(c, int) and 0 <= c <= 255 for c in request
    ):
        raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'request' must be option codes")
    try:
        ok = isinstance(provide, dict) and all(
            k.isdigit() and int(k) < 255 and bytes.fromhex(v) is not None
            for k, v in provide.items()
        )
    except (TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'provide' must map codes to hex")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'priority' must be an integer")
    return request, provide, priority


class Daemon:
    def __init__(self, flags: dict):
        self.host_prefix = flags["hostprefix"]
        self.settings = Settings(
            flags["timeout"], flags["resendmax"], flags["resendtimeout"], flags["broadcast"]
        )
        self.store = LeaseStore(flags["statedir"])
        self.leases: dict = {}  # client-id key -> LeaseWorker
        self.lock = threading.Lock()

    # -- leases ---------------------------------------------------------------------------

    def _start(self, att: Attachment, stored=None) -> LeaseWorker:
        worker = LeaseWorker(att, self.settings, self.store, self._ended, stored)
        self.leases[att.key] = worker
        worker.start()
        return worker

    def _ended(self, worker: LeaseWorker) -> None:
        with self.lock:
            current = self.leases.get(worker.att.key)
            if current is worker:
                del self.leases[worker.att.key]
            if current is worker or current is None:  # not a newer lease's file
                self.store.remove(worker.att.key)
        LOG.info("%s: lease maintenance stopped (%s)", worker.att.key, worker.ended or "released")

    def resume_stored(self) -> None:
        for record in self.store.load_all():
            try:
                att = Attachment(**{k: record[k] for k in Attachment.FIELDS})
                stored = dict(record["lease"])
            except (KeyError, TypeError, ValueError) as err:
                LOG.warning("ignoring stored lease %s: %s", record.get("key"), err)
                continue
            with self.lock:
                self._start(att, stored)

    # -- requests -------------------------------------------------------------------------

    def allocate(self, params: dict) -> dict:
        container_id, network, ifname, netns_path = _require(
            params, "containerID", "network", "ifname", "netns"
        )
        request, provide, priority = _lease_options(params)
        key = options.client_id(container_id, network, ifname)
        netns_path = self.host_prefix + netns_path
        with self.lock:
            worker = self.leases.get(key)
            if (
                worker is not None
                and not worker.finished.is_set()
                and not worker.serves(netns_path)
            ):
                LOG.info("%s: a new netns for this attachment, starting over", key)
                worker.stop(release=False, wait=0)
                del self.leases[key]
                worker = None
            if worker is None or worker.finished.is_set():
                att = Attachment(
                    key=key,
                    containerID=container_id,
                    network=network,
                    ifname=ifname,
                    netns=netns_path,
                    request=request,
                    provide=provide,
                    priority=priority,
                )
                worker = self._start(att)
        try:
            return worker.wait(self.settings.resend_timeout + 5)
        except CNIError:
            if not worker.ready.is_set() or worker.error is not None:
                worker.stop(release=False)
            raise

    def _worker(self, params: dict) -> tuple:
        container_id, network, ifname = _require(params, "containerID", "network", "ifname")
        key = options.client_id(container_id, network, ifname)
        with self.lock:
            return key, self.leases.get(key)

    def check(self, params: dict) -> dict:
        key, worker = self._worker(params)
        if worker is None or not worker.held():
            raise CNIError(
                INTERNAL,
                f"dhcp: no lease held for {key}",
                "the daemon does not renew a lease for this attachment",
            )
        address = worker.result()["ips"][0]["address"]
        recorded = params.get("addresses")
        if isinstance(recorded, list) and recorded and address not in recorded:
            raise CNIError(
                INTERNAL,
                f"dhcp: the lease for {key} is {address}, the runtime "
                f"recorded {', '.join(map(str, recorded))}",
            )
        return {"address": address}

    def release(self, params: dict) -> dict:
        key, worker = self._worker(params)
        if worker is not None:
            worker.stop(release=True)
        self.store.remove(key)
        return {"released": worker is not None}

    def gc(self, params: dict) -> dict:
        (network,) = _require(params, "network")
        valid = params.get("valid")
        if not isinstance(valid, list) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v)
            for v in valid
        ):
            raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'valid' must be pairs")
        keep = {options.client_id(cid, network, ifname) for cid, ifname in valid}
        with self.lock:
            stale = [
                w for key, w in self.leases.items() if w.att.network == network and key not in keep
            ]
        for worker in stale:
            LOG.info("%s: GC: attachment is gone, releasing", worker.att.key)
            worker.stop(release=True)
        return {"released": [w.att.key for w in stale]}

    def status(self, params: dict) -> dict:
        with self.lock:
            return {"leases": len(self.leases)}

    METHODS = ("allocate", "check", "release", "gc", "status")

    def serve_connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            try:
                line = rpc._read_line(conn)
                if not line:
                    return  # a probe: connected and closed
                if line.startswith(b"CONNECT "):  # upstream's Go plugin (net/rpc over HTTP)
                    conn.sendall(GO_CLIENT_ANSWER)
                    return
                request = rpc.decode(line)
                method, params = request.get("method"), request.get("params")
                if request.get("protocol") != rpc.PROTOCOL or method not in self.METHODS:
                    raise CNIError(INTERNAL, f"bad request: unknown method {method!r} or protocol")
                if not isinstance(params, dict):
                    raise CNIError(INTERNAL, "bad request: 'params' must be an object")
                conn.settimeout(None)
                reply = {"result": getattr(self, method)(params)}
            except CNIError as err:
                reply = {"error": err.to_dict()}
            except (ValueError, UnicodeDecodeError) as err:
                reply = {"error": {"code": INTERNAL, "msg": f"bad request: {err}"}}
            except Exception as err:  # a bug: report it, keep serving
                LOG.exception("request failed")
                reply = {"error": {"code": INTERNAL, "msg": f"dhcp daemon: {err}"}}
            conn.sendall(rpc.encode(reply))
        except OSError as err:
            LOG.warning("client connection: %s", err)
        finally:
            conn.close()


def _listener(path: str) -> tuple:
    """(socket, whether we created the path): systemd's socket if we were activated."""
    if (
        os.environ.get("LISTEN_PID") == str(os.getpid())
        and int(os.environ.get("LISTEN_FDS") or 0) >= 1
    ):
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return socket.socket(fileno=SD_LISTEN_FDS_START), False
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        raise SystemExit(f"dhcp daemon: another daemon is listening on {path}")
    except (FileNotFoundError, ConnectionRefusedError):
        pass  # nothing there, or a stale socket of a daemon that was killed
    finally:
        probe.close()
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o660)
    return sock, True


def _terminate(signum, frame):
    raise SystemExit(0)


def main(argv: list) -> int:
    try:
        flags = parse_flags(argv)
    except UsageError as err:
        if str(err):
            print(err, file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2 if str(err) else 0
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(message)s",
        datefmt="%Y/%m/%d %H:%M:%S",
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    socket_path = flags["hostprefix"] + (flags["socketpath"] or rpc.DEFAULT_SOCKET)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    listener, created = _listener(socket_path)
    pidfile = flags["pidfile"]
    try:
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(str(os.getpid()))
        daemon = Daemon(flags)
        daemon.resume_stored()
        listener.listen(128)
        LOG.info("dhcp daemon listening on %s", socket_path)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=daemon.serve_connection, args=(conn,), daemon=True).start()
    finally:
        listener.close()
        if created:
            try:
                os.unlink(socket_path)
            except OSError:
                pass
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
    return 0
