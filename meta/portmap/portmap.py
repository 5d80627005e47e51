"""portmap: forward host ports to the container (capability `portMappings`), chained after a
main plugin whose result gives the container's addresses.

Nothing is touched when there are no mappings. DEL needs neither prevResult nor the mappings:
the container's rules are found by their derived chain name (iptables) or comment (nftables),
and the pod addresses their DNATs name find its UDP conntrack entries. GC finds a network's
rules by the iptables jump comments and the nftables comments, which both name the network.
"""

from libcni.protocol import skel
from libcni.protocol.config import IP, Int32, NetConf, Struct
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result
from meta.portmap import hostports, nftables

BACKENDS = ("iptables", "nftables")
PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MARK_BIT = 13


class PortMapping(Struct):
    hostPort: Int32 = 0
    containerPort: Int32 = 0
    protocol: str = ""
    hostIP: IP = ""


class RuntimeConfig(Struct):
    portMappings: list[PortMapping] = []


class PortMapConf(NetConf):
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]
    backend: str | None = None
    snat: bool | None = None
    masqAll: bool = False
    markMasqBit: Int32 | None = None
    externalSetMarkChain: str | None = None
    conditionsV4: list[str] | None = None
    conditionsV6: list[str] | None = None


def load_conf(call: skel.Call) -> PortMapConf:
    conf = call.load(PortMapConf)
    if conf.snat is None:
        conf.snat = True
    if conf.markMasqBit is not None and conf.externalSetMarkChain is not None:
        raise config_error("Cannot specify externalSetMarkChain and markMasqBit")
    if conf.markMasqBit is None:
        conf.markMasqBit = DEFAULT_MARK_BIT
    if not 0 <= conf.markMasqBit <= 31:
        raise config_error("MasqMarkBit must be between 0 and 31")
    conf.backend = choose_backend(conf)
    for m in mappings_of(conf):
        m.protocol = m.protocol.lower()
        if m.containerPort <= 0 or m.containerPort > 65535:
            raise config_error(f"Invalid container port number: {m.containerPort}")
        if m.hostPort <= 0 or m.hostPort > 65535:
            raise config_error(f"Invalid host port number: {m.hostPort}")
        if m.protocol not in PROTOCOLS:
            raise config_error(
                f'invalid protocol "{m.protocol}" for host port {m.hostPort}',
                f"use one of {', '.join(PROTOCOLS)}",
            )
    return conf


def choose_backend(conf: PortMapConf) -> str:
    """Options imply a backend; an explicit one that contradicts them is an error."""
    from libcni.netfilter import masquerade as masq

    implied: dict = {"iptables": [], "nftables": []}
    if conf.externalSetMarkChain is not None:
        implied["iptables"].append("externalSetMarkChain")
    for key in ("conditionsV4", "conditionsV6"):
        conditions = getattr(conf, key)
        if conditions and conditions[0]:
            implied["iptables" if conditions[0][0] in "-!" else "nftables"].append(key)
    backend = conf.backend
    if backend is None:
        backend = masq.choose_backend("")
    if backend not in BACKENDS:
        raise config_error(f'unrecognized backend "{backend}"', 'use "iptables" or "nftables"')
    other = "nftables" if backend == "iptables" else "iptables"
    if implied[other]:
        raise config_error(
            f"{backend} backend was requested but configuration contains {other}-specific "
            f"options [{' '.join(implied[other])}]"
        )
    return backend


def mappings_of(conf: PortMapConf) -> list:
    return conf.runtimeConfig.portMappings if conf.runtimeConfig is not None else []


def container_addresses(result: Result, ifname: str) -> list:
    """The first IPv4 and first IPv6 address of the container interface, as "ip/prefix"."""
    chosen: dict = {}
    for entry in result.ips:
        version = 6 if ":" in entry["address"] else 4
        index = entry.get("interface")
        if index is not None and 0 <= index < len(result.interfaces):
            target = result.interfaces[index]
            if target.get("name") != ifname or not target.get("sandbox"):
                continue
        chosen.setdefault(version, entry["address"])
    return [chosen[v] for v in sorted(chosen)]


def plans(call: skel.Call, conf: PortMapConf, result: Result) -> list:
    return [
        hostports.Plan(conf, conf.name, call.container_id, address, mappings_of(conf))
        for address in container_addresses(result, call.ifname)
    ]


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    previous = call.chained_result("must be called as chained plugin")
    if not mappings_of(conf):
        return previous
    mapped = [plan for plan in plans(call, conf, previous) if plan.mappings]
    for plan in mapped:
        if conf.backend == "nftables":
            nftables.setup(plan)
        else:
            hostports.setup_iptables(plan)
    localnet = [plan for plan in mapped if conf.snat and plan.version == 4]
    if localnet:
        from libcni.kernel.session import Session

        with Session() as host:
            for plan in localnet:
                hostports.enable_route_localnet(host, str(plan.iface.ip))
    hostports.forget_udp_flows(mapped)
    return previous


def delete(call: skel.Call) -> None:
    conf = call.load(PortMapConf)
    previous = call.prev_result()
    addresses = container_addresses(previous, call.ifname) if previous is not None else []
    families = sorted({6 if ":" in a else 4 for a in addresses}) or [4, 6]
    # The backend ADD used (an explicit one, one the options imply, or the node's default);
    # a config that changed its backend since ADD leaves the old rules to GC, as upstream.
    try:
        backend = choose_backend(conf)
    except CNIError:
        backend = ""
    mappings = mappings_of(conf)
    for m in mappings:
        m.protocol = m.protocol.lower()
    udp = any(m.protocol == "udp" for m in mappings)
    targets: list = []
    if backend != "nftables":
        if udp and not addresses:
            # No prevResult: the pod's addresses are in its UDP DNATs, read from its chain.
            targets += hostports.chain_targets(conf.name, call.container_id, families)
        entries = {
            family: hostports.entry_rules(
                hostports.Plan(conf, conf.name, call.container_id, ANY[family], mappings)
            )
            for family in families
        }
        targets += hostports.teardown_iptables(conf.name, call.container_id, families, entries)
    if backend != "iptables":
        bare = [a.split("/")[0] for a in addresses]
        targets += nftables.teardown(conf.name, call.container_id, families, mappings, bare)
    if udp:
        targets += [a.split("/")[0] for a in addresses]
    hostports.forget_pod_udp_flows(sorted(set(targets)))


ANY = {4: "0.0.0.0/32", 6: "::/128"}  # a Plan's family, where only its jumps are wanted


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    previous = call.chained_result("Required prevResult missing")
    for plan in plans(call, conf, previous):
        if not plan.mappings:
            continue
        if conf.backend == "nftables":
            missing = nftables.check(plan)
        else:
            missing = hostports.check_iptables(plan)
        if missing:
            raise CNIError(INTERNAL, f"could not check ipv{plan.version} dnat: {missing}")


def gc(call: skel.Call) -> None:
    conf = call.load(PortMapConf)
    valid_ids = {container_id for container_id, _ in call.valid_attachments()}
    targets = hostports.gc_iptables(conf.name, valid_ids)
    targets += nftables.gc(conf.name, valid_ids)
    hostports.forget_pod_udp_flows(sorted(set(targets)))


PLUGIN = skel.Plugin("portmap", add=add, delete=delete, check=check, gc=gc)
