"""portmap's netfilter work: host ports DNATed to a container, with upstream's object names.

iptables (nat table): shared chains CNI-HOSTPORT-DNAT (jumped to from PREROUTING/OUTPUT for
local destinations), CNI-HOSTPORT-SETMARK and CNI-HOSTPORT-MASQ (hairpin and localhost
masquerade through a mark bit), and one CNI-DN-<sha512(net+cid)> chain per container, reached
from CNI-HOSTPORT-DNAT by multiport jumps commented `dnat name: "<net>" id: "<cid>"`.
nftables: see nftables.py.

A pod's ADD and DEL are one `iptables-restore --noflush` per family that reads nothing (its
chain created with `-N`, the shared rules checked with `-C`, its jumps deleted by their
spelling); the table is read only when that transaction does not apply (the node's first pod,
a repeated call, rules someone else changed), and then the per-container chain is declared in
the transaction, which (re)creates it empty, so a repeated ADD never doubles rules.
"""

import ipaddress

from libcni.netfilter import batch as netfilter
from libcni.protocol.names import hashed_name

DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
OLD_SNAT_CHAIN = "CNI-HOSTPORT-SNAT"
MULTIPORT_MAX = 15
COMMENT_MAX = 255
NFT_TABLE = "cni_hostport"
NFT_COMMENT_MAX = 128


class Plan:
    """What one container's mappings need in one family."""

    def __init__(self, conf, network: str, container_id: str, container: str, mappings: list):
        self.network = network
        self.container_id = container_id
        self.iface = ipaddress.ip_interface(container)  # the address as the result gives it
        self.version = self.iface.version
        self.snat: bool = conf.snat
        self.masq_all: bool = conf.masqAll
        self.mark_bit: int = conf.markMasqBit
        self.setmark = conf.externalSetMarkChain or SETMARK_CHAIN
        self.external_setmark = bool(conf.externalSetMarkChain)
        conditions = conf.conditionsV4 if self.version == 4 else conf.conditionsV6
        self.conditions: list = list(conditions or [])
        self.mappings = [m for m in mappings if self._same_family(m.hostIP)]

    def _same_family(self, host_ip: str) -> bool:
        return not host_ip or ipaddress.ip_address(host_ip).version == self.version

    @property
    def any_source(self) -> str:
        return "0.0.0.0/0" if self.version == 4 else "::/0"

    def destination(self, port: int) -> str:
        ip = self.iface.ip
        return f"{ip}:{port}" if self.version == 4 else f"[{ip}]:{port}"


def dnat_chain(network: str, container_id: str) -> str:
    return hashed_name("CNI-DN-", network, container_id)


def old_snat_chain(network: str, container_id: str) -> str:
    return hashed_name("CNI-SN-", network, container_id)


def dnat_comment(network: str, container_id: str) -> str:
    text = f'dnat name: "{network}" id: "{container_id}"'
    return text if len(text) <= COMMENT_MAX else text[:253] + "..."


def _arg(token: str) -> str:
    """A token of a rule line for iptables-restore (quoted when it holds spaces or quotes)."""
    if token and not any(c.isspace() or c in "\"'\\" for c in token):
        return token
    return netfilter.quote(token)


def _mark(bit: int) -> str:
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


# -- iptables ------------------------------------------------------------------------------


def entry_rules(plan: Plan) -> list:
    """The jumps from CNI-HOSTPORT-DNAT into the container's chain, as argument lists."""
    by_proto: dict = {}
    for m in plan.mappings:
        by_proto.setdefault(m.protocol, []).append(str(m.hostPort))
    comment = dnat_comment(plan.network, plan.container_id)
    rules = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for start in range(0, len(ports), MULTIPORT_MAX):
            chunk = ",".join(ports[start : start + MULTIPORT_MAX])
            rules.append(
                [
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-m",
                    "multiport",
                    "-p",
                    proto,
                    "--destination-ports",
                    chunk,
                    *plan.conditions,
                ]
            )
    return rules


def chain_rules(plan: Plan) -> list:
    """The container chain's rules, per mapping: hairpin mark, localhost mark, DNAT."""
    rules = []
    for m in plan.mappings:
        base = ["-p", m.protocol, "--dport", str(m.hostPort)]
        if m.hostIP and not ipaddress.ip_address(m.hostIP).is_unspecified:
            base += ["-d", m.hostIP]
        if plan.snat:
            source = plan.any_source if plan.masq_all else str(plan.iface)
            rules.append([*base, "-s", source, "-j", plan.setmark])
            if plan.version == 4 and not plan.masq_all:
                rules.append([*base, "-s", "127.0.0.1", "-j", plan.setmark])
        rules.append([*base, "-j", "DNAT", "--to-destination", plan.destination(m.containerPort)])
    return rules


def shared_rules(plan: Plan) -> list:
    """The rules all containers share (`-A` lines), which the first ADD on a node creates."""
    rules = []
    if plan.snat and not plan.external_setmark:
        mark = _mark(plan.mark_bit)
        rules += [
            f"-A {SETMARK_CHAIN} -m comment --comment "
            f'"CNI portfwd masquerade mark" -j MARK --set-xmark {mark}',
            f"-A {MASQ_CHAIN} -m mark --mark {mark} -j MASQUERADE",
            "-A POSTROUTING -m comment --comment "
            f'"CNI portfwd requiring masquerade" -j {MASQ_CHAIN}',
        ]
    rules += [f"-A {hook} -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}" for hook in HOOKS]
    return rules


HOOKS = ("PREROUTING", "OUTPUT")


def container_lines(plan: Plan) -> list:
    """The container's chain rules and the jumps to it (`-A` lines)."""
    chain = dnat_chain(plan.network, plan.container_id)
    lines = [f"-A {chain} " + " ".join(map(_arg, rule)) for rule in chain_rules(plan)]
    lines += [
        f"-A {DNAT_CHAIN} " + " ".join(map(_arg, rule)) + f" -j {chain}"
        for rule in entry_rules(plan)
    ]
    return lines


def setup_iptables(plan: Plan) -> None:
    family = plan.version
    chain = dnat_chain(plan.network, plan.container_id)
    # The usual ADD: the shared rules are there (`-C`) and the container's chain is not
    # (`-N`); one transaction, no read. Else (the node's first ADD, a repeated ADD) the table
    # is read and the missing pieces are added.
    fast = ["-C" + r[2:] for r in shared_rules(plan)] + [f"-N {chain}", *container_lines(plan)]
    if netfilter.try_restore(family, "nat", fast):
        return
    table = netfilter.save(family, "nat")
    lines: list = []

    def ensure_chain(name: str) -> bool:
        if name in table.chains:
            return False
        lines.append(f":{name} - [0:0]")
        return True

    if plan.snat and not plan.external_setmark:
        setmark, masq, postrouting = shared_rules(plan)[:3]
        if ensure_chain(SETMARK_CHAIN) or not table.rules_of(SETMARK_CHAIN):
            lines.append(setmark)
        if ensure_chain(MASQ_CHAIN) or not table.rules_of(MASQ_CHAIN):
            lines.append(masq)
        if not _jumps(table, "POSTROUTING", MASQ_CHAIN):
            lines.append("-I POSTROUTING 1" + postrouting[len("-A POSTROUTING") :])
    ensure_chain(DNAT_CHAIN)
    for hook in HOOKS:
        if not _jumps(table, hook, DNAT_CHAIN):
            lines.append(f"-A {hook} -m addrtype --dst-type LOCAL -j {DNAT_CHAIN}")
    lines += ["-D" + r[2:] for r in _jumps(table, DNAT_CHAIN, chain)]
    lines.append(f":{chain} - [0:0]")  # created, or emptied for a repeated ADD
    lines += container_lines(plan)
    netfilter.restore(family, "nat", lines)


def _jumps(table, chain: str, target: str) -> list:
    return [r for r in table.rules_of(chain) if netfilter.target_of(r) == target]


def teardown_iptables(
    network: str, container_id: str, families=(4, 6), entries: dict | None = None
) -> list:
    """Remove the container's chain and every jump to it; legacy SNAT chains too. Returns
    the container addresses its UDP DNAT rules pointed at (only a pod with UDP host ports
    needs its conntrack entries flushed, and that saves a table dump on every other DEL).

    `entries` {family: [jump rule argument lists]} are the jumps ADD made (the DEL's own
    mappings): given, they are deleted by their spelling and the chain by its name, reading
    nothing; the table is read only when that fails and the chain is there (a repeated DEL,
    mappings that changed since ADD, rules someone else changed)."""
    from libcni.netfilter.masquerade import chains_exist

    chain = dnat_chain(network, container_id)
    chains = {chain: DNAT_CHAIN, old_snat_chain(network, container_id): OLD_SNAT_CHAIN}
    targets: list = []
    for family in families:
        jumps = [
            f"-D {DNAT_CHAIN} " + " ".join(map(_arg, rule)) + f" -j {chain}"
            for rule in (entries or {}).get(family, [])
        ]
        if jumps and netfilter.try_restore(family, "nat", [*jumps, f"-F {chain}", f"-X {chain}"]):
            continue
        if chains_exist(family, "nat", list(chains)):
            targets += _drop(netfilter.save(family, "nat"), chains)
    return targets


def chain_targets(network: str, container_id: str, families) -> list:
    """The addresses the container's UDP DNATs point at, from a listing of its chain only."""
    chain = dnat_chain(network, container_id)
    targets: list = []
    for family in families:
        listing = netfilter.run_quietly(
            [netfilter.IPTABLES[family], "--wait", "-t", "nat", "-S", chain]
        )
        targets += [t for r in listing.splitlines() if " udp " in r and (t := _to_destination(r))]
    return targets


def _drop(table, chains: dict) -> list:
    lines = []
    targets = []
    for chain, parent in chains.items():
        for hook in {parent, "PREROUTING", "OUTPUT", "POSTROUTING"}:
            lines += ["-D" + r[2:] for r in _jumps(table, hook, chain)]
        targets += [t for r in table.rules_of(chain) if " udp " in r and (t := _to_destination(r))]
    for chain in chains:
        if chain in table.chains:
            lines += [f"-F {chain}", f"-X {chain}"]
    netfilter.restore(table.family, "nat", lines)
    return sorted(set(targets))


def _to_destination(rule: str) -> str | None:
    """The address of a saved `-j DNAT --to-destination 10.1.0.2:80` (`[fd00::2]:80`)."""
    words = rule.split()
    if "--to-destination" not in words[:-1]:
        return None
    target = words[words.index("--to-destination") + 1]
    host = target.rsplit(":", 1)[0] if not target.startswith("[") else target[1:].split("]")[0]
    return host or None


def check_iptables(plan: Plan) -> str | None:
    """None when every rule of the plan is in place, else what is missing."""
    chain = dnat_chain(plan.network, plan.container_id)
    wanted = [(chain, rule) for rule in chain_rules(plan)]
    wanted += [(DNAT_CHAIN, [*rule, "-j", chain]) for rule in entry_rules(plan)]
    binary = netfilter.IPTABLES[plan.version]
    for where, rule in wanted:
        if not netfilter.exists(binary, "nat", where, rule):
            return f"rule {' '.join(rule)} in chain {where} not found in table nat"
    return None


def gc_iptables(network: str, valid_ids: set) -> list:
    """Drop the chains of this network's containers that are no longer valid; the container
    addresses they pointed at."""
    prefix = f'dnat name: "{network}" id: "'
    targets: list = []
    for family in (4, 6):
        table = netfilter.save(family, "nat")
        stale = {}
        for rule in table.rules_of(DNAT_CHAIN):
            comment = netfilter.comment_of(rule) or ""
            target = netfilter.target_of(rule) or ""
            if comment.startswith(prefix) and target.startswith("CNI-DN-"):
                container_id = comment[len(prefix) : -1]
                if container_id not in valid_ids:
                    stale[target] = DNAT_CHAIN
        if stale:
            targets += _drop(table, stale)
    return targets


# -- around the rules ----------------------------------------------------------------------


def enable_route_localnet(host, container_ip: str) -> None:
    """Let 127.0.0.1:<hostPort> reach the container: route_localnet on the interface that
    routes to it, found through the host's kernel session (there is no IPv6 equivalent, so ::1
    host ports cannot work)."""
    from libcni.kernel import sysctl
    from libcni.kernel.routeget import output_link
    from libcni.protocol.errors import INTERNAL, CNIError

    device = output_link(host, container_ip)
    if device is None:
        return
    try:
        sysctl.ensure(sysctl.iface_key("ipv4", device.name, "route_localnet"), "1")
    except OSError as err:
        raise CNIError(INTERNAL, f"unable to enable route_localnet: {err.strerror}") from None


def forget_udp_flows(plans: list) -> None:
    """Delete conntrack entries to mapped UDP host ports: a flow that existed before the
    mapping would otherwise keep black-holing. One ctnetlink socket for every family, opened
    only when a UDP port is mapped. Best effort, like upstream."""
    from libcni.kernel import conntrack

    wanted = [(p.version, {m.hostPort for m in p.mappings if m.protocol == "udp"}) for p in plans]
    wanted = [(version, ports) for version, ports in wanted if ports]
    if not wanted:
        return
    try:
        with conntrack.ConntrackSocket() as sock:
            for version, ports in wanted:
                conntrack.forget_udp_to_ports(sock, ports, version)
    except OSError:
        pass


def forget_pod_udp_flows(addresses: list) -> None:
    """DEL: the pod's UDP entries go with its rules (upstream, 2024), so replies to a host
    port stop going to the dead pod's address. Best effort."""
    from libcni.kernel import conntrack

    if not addresses:
        return
    try:
        with conntrack.ConntrackSocket() as sock:
            conntrack.forget_udp_of(sock, addresses)
    except OSError:
        pass
