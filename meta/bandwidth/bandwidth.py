"""bandwidth: rate-limit a container's traffic on the host side of its veth, chained after a
veth-based main plugin (bridge, ptp). Ingress (into the container) is a tbf on the host veth;
egress goes through an ifb device `bwp<hash>` with its own tbf.
"""

from libcni.kernel.session import Session
from libcni.protocol import names, skel
from libcni.protocol.config import Int64, NetConf, Struct
from libcni.protocol.errors import config_error
from libcni.protocol.result import Result
from libcni.protocol.version import starting_from
from meta.bandwidth import tc

KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
MAX_BURST_BYTES = 2**32 - 1


class BandwidthEntry(Struct):
    ingressRate: Int64 = 0
    ingressBurst: Int64 = 0
    egressRate: Int64 = 0
    egressBurst: Int64 = 0


class RuntimeConfig(Struct):
    bandwidth: BandwidthEntry = None  # type: ignore[assignment]


class BandwidthConf(NetConf, BandwidthEntry):
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def limits(call: skel.Call) -> BandwidthEntry | None:
    """The top-level limits, or the runtime's `bandwidth` capability when none are set."""
    conf = call.load(BandwidthConf)
    entry: BandwidthEntry = conf
    if not any(getattr(conf, key) for key in KEYS):
        runtime = conf.runtimeConfig.bandwidth if conf.runtimeConfig is not None else None
        entry = runtime if runtime is not None else conf
    for key in KEYS:
        if getattr(entry, key) < 0:
            raise config_error(f"{key} must not be negative: {getattr(entry, key)}")
    for direction in ("ingress", "egress"):
        rate, burst = getattr(entry, direction + "Rate"), getattr(entry, direction + "Burst")
        if rate and not burst:
            raise config_error("if rate is set, burst must also be set")
        if burst and not rate:
            raise config_error("if burst is set, rate must also be set")
        if burst // 8 >= MAX_BURST_BYTES:
            raise config_error("burst cannot be more than 4GB")
    return entry if any(getattr(entry, key) for key in KEYS) else None


def ifb_name(call: skel.Call) -> str:
    return names.hashed_name("bwp", call.network_name, call.container_id, 15)


def owner(call: skel.Call) -> str:
    # Set as the ifb's alias, so GC knows the network and container it belongs to.
    return f"cni-bandwidth {call.network_name} {call.container_id}"


def buckets(entry: BandwidthEntry) -> tuple:
    ingress = tc.Tbf(entry.ingressRate, entry.ingressBurst) if entry.ingressRate else None
    egress = tc.Tbf(entry.egressRate, entry.egressBurst) if entry.egressRate else None
    return ingress, egress


def add(call: skel.Call) -> Result:
    entry = limits(call)
    previous = call.chained_result("must be called as chained plugin")
    if entry is None:
        return previous
    ingress, egress = buckets(entry)
    with Session(call.netns) as container, Session() as host:
        host_veth = tc.host_peer(container, host, call.ifname, previous)
        ifb = tc.shape(host, host_veth, ifb_name(call), owner(call), ingress, egress)
    if ifb is not None:
        previous.add_interface(**ifb)
    return previous


def delete(call: skel.Call) -> None:
    call.load(BandwidthConf)
    with Session() as host:
        tc.remove_ifb(host, ifb_name(call))


def check(call: skel.Call) -> None:
    entry = limits(call)
    previous = call.chained_result("must be called as a chained plugin")
    if entry is None:
        return
    ingress, egress = buckets(entry)
    with Session(call.netns) as container, Session() as host:
        host_veth = tc.host_peer(container, host, call.ifname, previous)
        tc.check(host, host_veth, ifb_name(call), ingress, egress)


def gc(call: skel.Call) -> None:
    keep = {container_id for container_id, _ in call.valid_attachments()}
    with Session() as host:
        tc.collect_ifbs(host, f"cni-bandwidth {call.network_name} ", keep)


PLUGIN = skel.Plugin(
    "bandwidth",
    add=add,
    delete=delete,
    check=check,
    gc=gc,
    supported_versions=starting_from("0.3.0"),
)
