"""host-local: allocate addresses from configured ranges, one per range set, recorded on disk.

Reads and writes the same store as upstream's binary (libcni/ipstore.py). Fixes over upstream:
the lock is held across the whole ADD (all range sets at once), GC reclaims reservations of
attachments the runtime no longer knows, and STATUS reports a full range set (code 50).
"""

import ipaddress

from ipam.host_local.ranges import RangeSet
from ipam.host_local.store import Store
from libcni.protocol import config, skel
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, PLUGIN_NOT_AVAILABLE, CNIError
from libcni.protocol.result import Result, parse_route

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


class IPAMConf(config.Struct):
    type: str = ""
    ranges: list = []
    subnet: str = ""
    rangeStart: str = ""
    rangeEnd: str = ""
    gateway: str = ""
    routes: list = []
    dataDir: config.Path = ""
    resolvConf: config.Path = ""


class RuntimeConfig(config.Struct):
    ips: list[str] = []
    ipRanges: list[list] = []


class Conf(config.NetConf):
    ipam: IPAMConf = None  # type: ignore[assignment]
    args: config.IpsArgs = None  # type: ignore[assignment]
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


class Allocation:
    """The decoded request: range sets in allocation order, requested addresses, the store."""

    def __init__(self, call: skel.Call):
        conf = call.load(Conf)
        if conf.ipam is None:
            raise CNIError(INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key")
        ipam = conf.ipam
        self.ipam = ipam
        raw_sets = []
        if conf.runtimeConfig is not None:
            raw_sets.extend(conf.runtimeConfig.ipRanges)
        if ipam.subnet:
            legacy = {
                "subnet": ipam.subnet,
                "rangeStart": ipam.rangeStart,
                "rangeEnd": ipam.rangeEnd,
                "gateway": ipam.gateway,
            }
            raw_sets.append([legacy])
        raw_sets.extend(ipam.ranges)
        if not raw_sets:
            raise CNIError(INVALID_NETWORK_CONFIG, "no IP ranges specified")
        self.sets = [RangeSet.parse(raw) for raw in raw_sets]
        for i, first in enumerate(self.sets):
            for j in range(i + 1, len(self.sets)):
                if first.overlaps(self.sets[j]):
                    raise CNIError(INVALID_NETWORK_CONFIG, f"range set {i} overlaps with {j}")
        if call.cni_version in ("", "0.1.0", "0.2.0"):
            for version in (4, 6):
                if sum(1 for s in self.sets if s.version == version) > 1:
                    raise CNIError(
                        INVALID_NETWORK_CONFIG,
                        f"CNI version {call.cni_version} "
                        "does not support more than 1 address per family",
                    )
        self.routes = [parse_route(r) for r in ipam.routes]
        self.store = Store(ipam.dataDir or DEFAULT_DATA_DIR, call.network_name)
        self.requested = _requested_ips(call, conf)


def _requested_ips(call: skel.Call, conf: Conf) -> list:
    """CNI_ARGS IP=, args.cni.ips and runtimeConfig ips, merged in that order, duplicates once."""
    texts = []
    ip_arg = call.cni_args("IP").get("IP")
    if ip_arg:
        texts.extend(ip_arg.split(","))
    if conf.args is not None and conf.args.cni is not None:
        texts.extend(conf.args.cni.ips)
    if conf.runtimeConfig is not None:
        texts.extend(conf.runtimeConfig.ips)
    requested = []
    for text in texts:
        try:
            ip = ipaddress.ip_interface(str(text).strip()).ip
        except ValueError:
            raise CNIError(
                INVALID_NETWORK_CONFIG, f'invalid requested IP address "{text}"'
            ) from None
        if ip not in requested:  # podman sends the same address twice on reload
            requested.append(ip)
    return requested


def _allocate(alloc: Allocation, call: skel.Call, index: int, range_set: RangeSet):
    store = alloc.store
    wanted = next((ip for ip in alloc.requested if range_set.range_for(ip)), None)
    if wanted is not None:
        alloc.requested.remove(wanted)
        chosen = range_set.range_for(wanted)
        if wanted == chosen.gateway:
            raise CNIError(INTERNAL, f"requested ip {wanted} is subnet's gateway")
        if not store.reserve(wanted, call.container_id, call.ifname, index):
            raise CNIError(
                INTERNAL, f"requested IP address {wanted} is not available in range set {range_set}"
            )
        return wanted, chosen
    for held in store.find(call.container_id, call.ifname):
        if range_set.range_for(held):
            raise CNIError(
                INTERNAL,
                f"{held} has been allocated to {call.container_id}, "
                "duplicate allocation is not allowed",
            )
    for candidate, candidate_range in range_set.walk(store.last_reserved(index)):
        if store.reserve(candidate, call.container_id, call.ifname, index):
            return candidate, candidate_range
    raise CNIError(INTERNAL, f"no IP addresses available in range set: {range_set}")


def add(call: skel.Call) -> Result:
    alloc = Allocation(call)
    # Read before anything is reserved: a bad resolvConf must not leave a reservation behind.
    dns = _read_resolv_conf(alloc.ipam.resolvConf) if alloc.ipam.resolvConf else {}
    result = Result(call.cni_version)
    taken = []
    with alloc.store:  # one lock across every range set
        try:
            for index, range_set in enumerate(alloc.sets):
                try:
                    ip, chosen = _allocate(alloc, call, index, range_set)
                except CNIError as err:
                    err.msg = f"failed to allocate for range {index}: {err.msg}"
                    raise
                taken.append(ip)
                result.add_ip(f"{ip}/{chosen.subnet.prefixlen}", str(chosen.gateway))
            if alloc.requested:
                left = " ".join(str(ip) for ip in alloc.requested)
                raise CNIError(INTERNAL, f"failed to allocate all requested IPs: {left}")
        except BaseException:
            for ip in taken:
                alloc.store.release(ip)
            raise
    result.routes = alloc.routes
    result.dns = dns
    return result


def delete(call: skel.Call) -> None:
    alloc = Allocation(call)
    with alloc.store:
        alloc.store.release_owner(call.container_id, call.ifname)


def check(call: skel.Call) -> None:
    alloc = Allocation(call)
    with alloc.store:
        if not alloc.store.find(call.container_id, call.ifname):
            raise CNIError(
                INTERNAL,
                f"host-local: Failed to find address added by container {call.container_id}",
            )


def gc(call: skel.Call) -> None:
    """Release reservations whose (containerID, ifname) is not a valid attachment."""
    alloc = Allocation(call)
    valid = set(call.valid_attachments())  # a CNIError, before anything is deleted, if malformed
    valid_ids = {container_id for container_id, _ in valid}
    with alloc.store:
        for ip, (container_id, ifname) in alloc.store.reservations().items():
            keep = container_id in valid_ids if ifname is None else (container_id, ifname) in valid
            if not keep:
                alloc.store.release(ip)


def status(call: skel.Call) -> None:
    """Code 50 when every address of some range set is taken: no new pod could get one."""
    alloc = Allocation(call)
    held = alloc.store.reservations()
    for range_set in alloc.sets:
        used = sum(1 for ip in held if range_set.range_for(ip) is not None)
        if used >= range_set.size():
            raise CNIError(
                PLUGIN_NOT_AVAILABLE,
                f"no IP addresses available in range set: {range_set}",
                f"{used} of {range_set.size()} addresses reserved",
            )


def _read_resolv_conf(path: str) -> dict:
    dns: dict = {}
    import os
    import stat

    # Symlinks are fine here (/etc/resolv.conf often is one); FIFOs, devices and huge files not.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CNIError(INTERNAL, f"host-local: resolvConf {path} is not a regular file")
            lines = f.read(1 << 20).decode(errors="replace").splitlines()
    except OSError as err:
        raise CNIError(
            INTERNAL, f"host-local: cannot read resolvConf {path}: {err.strerror}"
        ) from None
    for line in lines:
        fields = line.split("#")[0].split(";")[0].split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns.setdefault("search", []).extend(values)
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns


PLUGIN = skel.Plugin("host-local", add=add, delete=delete, check=check, gc=gc, status=status)
