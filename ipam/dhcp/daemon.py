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
import signal
import socket
import sys
import threading

from ipam.dhcp import options, rpc
from ipam.dhcp.flags import UsageError, parse_flags, usage
from ipam.dhcp.lease import Attachment, LeaseWorker, Settings
from ipam.dhcp.lease6 import Lease6Worker
from ipam.dhcp.store import LeaseStore
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError

LOG = logging.getLogger("dhcp")
SD_LISTEN_FDS_START = 3
# Go's rpc.DialHTTP shows the status line to its caller: "unexpected HTTP response: 501 ...".
GO_CLIENT_ANSWER = (
    b"HTTP/1.0 501 this is pycni's dhcp daemon, which serves pycni's dhcp plugin only; "
    b"run upstream's daemon on another socket for upstream's plugin\r\n\r\n"
)


FAMILIES = ("ipv4", "ipv6")
WORKERS = {"ipv4": LeaseWorker, "ipv6": Lease6Worker}
PARTS = {"ipv4": "lease", "ipv6": "lease6"}  # each family's lease in the stored record


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


def _families(params: dict) -> list:
    families = params.get("families", Attachment.DEFAULT_FAMILIES)
    if (
        not isinstance(families, list)
        or not families
        or not all(f in FAMILIES for f in families)
        or len(set(families)) != len(families)
    ):
        raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'families' must list ipv4, ipv6")
    return [f for f in FAMILIES if f in families]


def merge_results(results: list) -> dict:
    """One CNI result of the families' leases: IPv4's first, DNS servers of both."""
    merged: dict = {"ips": [], "routes": [], "dns": {}}
    for result in results:
        merged["ips"] += result["ips"]
        merged["routes"] += result["routes"]
        dns = result.get("dns") or {}
        for name in ("nameservers", "search"):
            for value in dns.get(name, []):
                if value not in merged["dns"].setdefault(name, []):
                    merged["dns"][name].append(value)
        if dns.get("domain") and "domain" not in merged["dns"]:
            merged["dns"]["domain"] = dns["domain"]
    return merged


class Daemon:
    def __init__(self, flags: dict):
        self.host_prefix = flags["hostprefix"]
        self.settings = Settings(
            flags["timeout"], flags["resendmax"], flags["resendtimeout"], flags["broadcast"]
        )
        self.store = LeaseStore(flags["statedir"])
        self.leases: dict = {}  # client-id key -> LeaseWorker (DHCPv4)
        self.leases6: dict = {}  # client-id key -> Lease6Worker (DHCPv6)
        self.tables = {"ipv4": self.leases, "ipv6": self.leases6}
        self.lock = threading.Lock()

    # -- leases ---------------------------------------------------------------------------

    def _start(self, att: Attachment, stored=None, family: str = "ipv4"):
        worker = WORKERS[family](att, self.settings, self.store, self._ended, stored)
        self.tables[family][att.key] = worker
        worker.start()
        return worker

    def _ended(self, worker) -> None:
        family, key = getattr(worker, "family", "ipv4"), worker.att.key
        table = self.tables[family]
        with self.lock:
            current = table.get(key)
            if current is worker:
                del table[key]
            if current is worker or current is None:  # not a newer lease's file
                self.store.drop(key, PARTS[family])
        LOG.info("%s: lease maintenance stopped (%s)", key, worker.ended or "released")

    def resume_stored(self) -> None:
        for record in self.store.load_all():
            try:
                att = Attachment(
                    **{k: record[k] for k in Attachment.FIELDS},
                    families=record.get("families"),
                    rapidCommit=record.get("rapidCommit", True),
                )
                stored = {
                    family: dict(record[PARTS[family]])
                    for family in att.families
                    if record.get(PARTS[family]) is not None
                }
            except (KeyError, TypeError, ValueError) as err:
                LOG.warning("ignoring stored lease %s: %s", record.get("key"), err)
                continue
            with self.lock:
                for family, lease in stored.items():
                    self._start(att, lease, family)

    # -- requests -------------------------------------------------------------------------

    def allocate(self, params: dict) -> dict:
        container_id, network, ifname, netns_path = _require(
            params, "containerID", "network", "ifname", "netns"
        )
        request, provide, priority = _lease_options(params)
        families = _families(params)
        rapid_commit = params.get("rapidCommit", True)
        if not isinstance(rapid_commit, bool):
            raise CNIError(INVALID_NETWORK_CONFIG, "bad request: 'rapidCommit' must be a boolean")
        key = options.client_id(container_id, network, ifname)
        netns_path = self.host_prefix + netns_path
        att = Attachment(
            key=key,
            containerID=container_id,
            network=network,
            ifname=ifname,
            netns=netns_path,
            request=request,
            provide=provide,
            priority=priority,
            families=families,
            rapidCommit=rapid_commit,
        )
        workers, started = [], []
        with self.lock:
            for family, table in self.tables.items():
                worker = table.get(key)
                if (
                    worker is not None
                    and not worker.finished.is_set()
                    and not worker.serves(netns_path)
                ):
                    LOG.info("%s: a new netns for this attachment, starting over", key)
                    worker.stop(release=False, wait=0)
                    del table[key]
                    worker = None
                if family not in families:
                    continue
                if worker is None or worker.finished.is_set():
                    worker = self._start(att, family=family)
                    started.append(worker)
                workers.append(worker)
        results = []
        try:
            for worker in workers:
                results.append(worker.wait(self.settings.resend_timeout + 5))
        except CNIError:
            # A failed ADD leaves nothing: a family that did get its lease gives it back.
            for worker in workers:
                if not worker.ready.is_set() or worker.error is not None:
                    worker.stop(release=False)
                elif worker in started:
                    worker.stop(release=True)
            raise
        return results[0] if len(results) == 1 else merge_results(results)

    def _workers(self, params: dict) -> tuple:
        """(key, {family: worker}) of the attachment a request names."""
        container_id, network, ifname = _require(params, "containerID", "network", "ifname")
        key = options.client_id(container_id, network, ifname)
        with self.lock:
            found = {f: t[key] for f, t in self.tables.items() if key in t}
        return key, found

    def check(self, params: dict) -> dict:
        key, workers = self._workers(params)
        addresses = []
        for family in _families(params):
            worker = workers.get(family)
            if worker is None or not worker.held():
                what = "lease" if family == "ipv4" else "DHCPv6 lease"
                raise CNIError(
                    INTERNAL,
                    f"dhcp: no {what} held for {key}",
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
            addresses.append(address)
        return {"address": addresses[0]} if len(addresses) == 1 else {"addresses": addresses}

    def release(self, params: dict) -> dict:
        key, workers = self._workers(params)
        for worker in workers.values():
            worker.stop(release=True, wait=0)
        for worker in workers.values():  # both families release at once
            worker.finished.wait(5.0)
        self.store.remove(key)
        return {"released": bool(workers)}

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
                w
                for table in self.tables.values()
                for key, w in table.items()
                if w.att.network == network and key not in keep
            ]
        for worker in stale:
            LOG.info("%s: GC: attachment is gone, releasing", worker.att.key)
            worker.stop(release=True)
        return {"released": [w.att.key for w in stale]}

    def status(self, params: dict) -> dict:
        with self.lock:
            return {"leases": len(self.leases) + len(self.leases6)}

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
