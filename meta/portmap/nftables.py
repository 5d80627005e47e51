"""portmap's nftables backend: tables `ip cni_hostport` and `ip6 cni_hostport`.

Shared chains as upstream's: `prerouting` and `output` (nat, for local destinations) jump to
`hostports_all`, which jumps to `hostip_hostports` and `hostports`; `masquerading` (srcnat) for
hairpin and localhost traffic. Beyond upstream, a container's rules live in chains of its own,
reached through one verdict-map element per host port and per container address:
    hostports_all:       meta l4proto . th dport vmap @hostports_map
                         element  tcp . 8080 : goto dn-<H(net)>-<H(cid)>  (its DNATs)
    masquerading_pods:   ip daddr vmap @masquerade_map
                         element  10.1.0.2 : goto sn-<H(net)>-<H(cid)>    (its masquerades)
so ADD and DEL write one transaction that names the container's chains and keys and reads
nothing; their cost does not grow with the pods on the node. The kernel refuses an element
whose key is there with another verdict, so a DEL never removes another container's entry
(the transaction fails and the careful path, which reads the table, takes over).

Mappings with a host IP, and rules of the older layout (every container's rules in `hostports`
and `masquerading`, commented `<containerID> net: <network>`; upstream's comment is the bare
container ID, which DEL also removes), are handled by reading the table.
"""

import ipaddress
import json

from libcni.netfilter import batch as netfilter
from libcni.protocol.names import sha512_hex

TABLE = "cni_hostport"
COMMENT_MAX = 128
DNAT_MAP = "hostports_map"
MASQ_MAP = "masquerade_map"


def family_of(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def comment_of(network: str, container_id: str) -> str:
    """Starts with the container ID, so a Go DEL's equality test never matches it by accident
    and a reader sees the owner first; cut to nft's 128 bytes."""
    return f"{container_id} net: {network}".replace('"', "")[:COMMENT_MAX]


def chains_of(network: str, container_id: str) -> tuple:
    tail = f"{sha512_hex(network)[:16]}-{sha512_hex(container_id)[:16]}"
    return f"dn-{tail}", f"sn-{tail}"


def _is_attachment(comment: str, network: str, container_id: str) -> bool:
    return comment in (comment_of(network, container_id), container_id)


def _has_host_ip(mappings: list) -> bool:
    return any(m.hostIP and not ipaddress.ip_address(m.hostIP).is_unspecified for m in mappings)


def _layout(plan) -> list:
    """Table, shared chains and maps; the small shared chains rewritten (O(1) in pods)."""
    where = f"{family_of(plan.version)} {TABLE}"
    address_type = "ipv4_addr" if plan.version == 4 else "ipv6_addr"
    conditions = " ".join(plan.conditions)
    script = [
        f'add table {where} {{ comment "CNI portmap plugin" ; }}',
        f"add chain {where} hostports",
        f"add chain {where} hostip_hostports",
        f"add chain {where} hostports_all",
        f"add map {where} {DNAT_MAP} {{ type inet_proto . inet_service : verdict ; }}",
        f"add map {where} {MASQ_MAP} {{ type {address_type} : verdict ; }}",
        f"flush chain {where} hostports_all",
        f"add rule {where} hostports_all jump hostip_hostports",
        f"add rule {where} hostports_all meta l4proto . th dport vmap @{DNAT_MAP}",
        f"add rule {where} hostports_all jump hostports",
    ]
    # -100 is "dstnat"; nft before 1.0.7 accepts that name only on the prerouting hook.
    for hook in ("prerouting", "output"):
        script += [
            f"add chain {where} {hook} {{ type nat hook {hook} priority -100 ; }}",
            f"flush chain {where} {hook}",
            f"add rule {where} {hook} {conditions} fib daddr type local jump hostports_all",
        ]
    if plan.snat:
        ipx = family_of(plan.version)
        script += [
            f"add chain {where} masquerading {{ type nat hook postrouting priority srcnat ; }}",
            f"add chain {where} masquerading_pods "
            "{ type nat hook postrouting priority srcnat ; }",
            f"flush chain {where} masquerading_pods",
            f"add rule {where} masquerading_pods {ipx} daddr vmap @{MASQ_MAP}",
        ]
    return script


def _container(plan) -> list:
    """The container's chains (re)made with its rules, and its map elements."""
    ipx = family_of(plan.version)
    where = f"{ipx} {TABLE}"
    dnat, masq = chains_of(plan.network, plan.container_id)
    note = f"comment {netfilter.nft_string(comment_of(plan.network, plan.container_id))}"
    script = [f"add chain {where} {dnat}", f"flush chain {where} {dnat}"]
    for m in plan.mappings:
        script += [
            f"add rule {where} {dnat} {m.protocol} dport {m.hostPort} "
            f"dnat to {plan.destination(m.containerPort)} {note}",
            f"add element {where} {DNAT_MAP} {{ {m.protocol} . {m.hostPort} : goto {dnat} }}",
        ]
    if plan.snat:
        ip = plan.iface.ip
        sources = [plan.any_source if plan.masq_all else str(ip)]
        if plan.version == 4 and not plan.masq_all:
            sources.append("127.0.0.1")
        script += [f"add chain {where} {masq}", f"flush chain {where} {masq}"]
        script += [
            f"add rule {where} {masq} {ipx} saddr {source} {ipx} daddr {ip} masquerade {note}"
            for source in sources
        ]
        script.append(f"add element {where} {MASQ_MAP} {{ {ip} : goto {masq} }}")
    return script


def setup(plan) -> None:
    if _has_host_ip(plan.mappings):
        _setup_older(plan)
        return
    script = _layout(plan) + _container(plan)
    if netfilter.nft_try("\n".join(script) + "\n"):
        return
    # A key held by another container (a missed DEL, a port taken twice): it passes to this one.
    listing = _listing(plan.version)
    where = f"{family_of(plan.version)} {TABLE}"
    mine = set(chains_of(plan.network, plan.container_id))
    keys = {(DNAT_MAP, f"{m.protocol} . {m.hostPort}") for m in plan.mappings}
    keys.add((MASQ_MAP, str(plan.iface.ip)))
    freed = [
        f"delete element {where} {name} {{ {key} }}"
        for name, key, target in _elements(listing)
        if (name, key) in keys and target not in mine
    ]
    netfilter.nft_script("\n".join(_layout(plan) + freed + _container(plan)) + "\n")


def teardown(network: str, container_id: str, versions, mappings: list, addresses: list) -> list:
    """Remove the container's chains, elements and older rules in the tables of `versions`;
    the container addresses its UDP DNATs pointed at. With the mappings (none with a host IP)
    and the addresses of a family, one transaction that reads nothing; else the table."""
    dnat, masq = chains_of(network, container_id)
    targets: list = []
    for version in versions:
        mine = [a for a in addresses if ipaddress.ip_address(a).version == version]
        if mappings and mine and not _has_host_ip(mappings):
            where = f"{family_of(version)} {TABLE}"
            kind = "ipv4_addr" if version == 4 else "ipv6_addr"
            script = [
                f"add map {where} {DNAT_MAP} {{ type inet_proto . inet_service : verdict ; }}",
                f"add map {where} {MASQ_MAP} {{ type {kind} : verdict ; }}",
                f"add chain {where} {dnat}",
                f"add chain {where} {masq}",
            ]
            # Adding what is there with our verdict changes nothing and makes the delete valid.
            keys = [(DNAT_MAP, f"{m.protocol} . {m.hostPort}", dnat) for m in mappings]
            keys += [(MASQ_MAP, address, masq) for address in mine]
            for name, key, chain in keys:
                script += [
                    f"add element {where} {name} {{ {key} : goto {chain} }}",
                    f"delete element {where} {name} {{ {key} }}",
                ]
            for chain in (dnat, masq):
                script += [f"flush chain {where} {chain}", f"delete chain {where} {chain}"]
            if netfilter.nft_try("\n".join(script) + "\n"):
                continue
        targets += _drop(
            version,
            lambda chain: chain in (dnat, masq),
            lambda c: _is_attachment(c, network, container_id),
        )
    return targets


def gc(network: str, valid_ids: set) -> list:
    """Remove what this network's containers no longer valid left; their addresses."""
    tail = comment_of(network, "")
    keep = {comment_of(network, cid) for cid in valid_ids}
    keep_chains = {chain for cid in valid_ids for chain in chains_of(network, cid)}
    ours = f"-{sha512_hex(network)[:16]}-"
    targets: list = []
    for version in (4, 6):
        targets += _drop(
            version,
            lambda chain: chain[2:].startswith(ours) and chain not in keep_chains,
            lambda c: c.endswith(tail) and c not in keep and len(c) < COMMENT_MAX,
        )
    return targets


def _listing(version: int) -> list:
    return netfilter.nft_list("table", family_of(version), TABLE)


def _elements(listing: list) -> list:
    """(map, key as nft spells it, target chain) of every element of the two maps."""
    found = []
    for item in listing:
        table_map = item.get("map")
        if not table_map or table_map["name"] not in (DNAT_MAP, MASQ_MAP):
            continue
        for key, verdict in table_map.get("elem", []):
            if isinstance(key, dict) and "concat" in key:
                key = " . ".join(str(part) for part in key["concat"])
            target = (verdict.get("goto") or verdict.get("jump") or {}).get("target", "")
            found.append((table_map["name"], str(key), target))
    return found


def _drop(version: int, doomed_chain, doomed_comment) -> list:
    """The careful path: read the table, delete the chains (and their elements) and the older
    rules the predicates pick; the container addresses of the UDP DNATs among them."""
    listing = _listing(version)
    if not listing:
        return []
    where = f"{family_of(version)} {TABLE}"
    chains = {item["chain"]["name"] for item in listing if "chain" in item}
    doomed = {name for name in chains if doomed_chain(name)}
    rules = [item["rule"] for item in listing if "rule" in item]
    older = [r for r in rules if doomed_comment(r.get("comment", ""))]
    script = [
        f"delete element {where} {name} {{ {key} }}"
        for name, key, target in _elements(listing)
        if target in doomed
    ]
    script += [f"delete rule {where} {r['chain']} handle {r['handle']}" for r in older]
    script += [f"flush chain {where} {c}\ndelete chain {where} {c}" for c in sorted(doomed)]
    if script:
        netfilter.nft_script("\n".join(script) + "\n")
    targets = []
    for r in older + [r for r in rules if r["chain"] in doomed]:
        if (t := _dnat_target(r)) and t not in targets and '"udp"' in json.dumps(r):
            targets.append(t)
    return targets


def _dnat_target(rule: dict) -> str | None:
    """The address of a `dnat to <ip>:<port>` rule in `nft -j` form."""
    for statement in rule.get("expr", []):
        if isinstance(statement, dict) and "dnat" in statement:
            addr = statement["dnat"].get("addr")
            return addr if isinstance(addr, str) else None
    return None


def check(plan) -> str | None:
    listing = _listing(plan.version)
    rules = [item["rule"] for item in listing if "rule" in item]
    dnat, masq = chains_of(plan.network, plan.container_id)
    mine = [
        r for r in rules if _is_attachment(r.get("comment", ""), plan.network, plan.container_id)
    ]
    mapped = {(name, target) for name, _, target in _elements(listing)}
    dnats = sum(1 for r in mine if r["chain"] in ("hostports", dnat))
    masqs = sum(1 for r in mine if r["chain"] in ("masquerading", masq))
    if plan.mappings and not _has_host_ip(plan.mappings) and (DNAT_MAP, dnat) not in mapped:
        dnats = 0
    if plan.snat and not _has_host_ip(plan.mappings) and (MASQ_MAP, masq) not in mapped:
        masqs = sum(1 for r in mine if r["chain"] == "masquerading")
    want_masq = (2 if plan.version == 4 and not plan.masq_all else 1) if plan.snat else 0
    if dnats < len(plan.mappings) or masqs < want_masq:
        return (
            f"expected {len(plan.mappings)} hostport and {want_masq} masquerade rules, "
            f"found {dnats} and {masqs}"
        )
    return None


# -- the older layout, for mappings with a host IP ---------------------------------------------


def _setup_older(plan) -> None:
    ipx = family_of(plan.version)
    where = f"{ipx} {TABLE}"
    note = f"comment {netfilter.nft_string(comment_of(plan.network, plan.container_id))}"
    script = _layout(plan)
    # A repeated ADD replaces the container's rules instead of doubling them.
    script += [
        f"delete rule {where} {r['chain']} handle {r['handle']}"
        for item in _listing(plan.version)
        if (r := item.get("rule"))
        and _is_attachment(r.get("comment", ""), plan.network, plan.container_id)
    ]
    for m in plan.mappings:
        match = ""
        if m.hostIP and not ipaddress.ip_address(m.hostIP).is_unspecified:
            match = f"{ipx} daddr {m.hostIP} "
        script.append(
            f"add rule {where} hostports {match}{m.protocol} dport {m.hostPort} "
            f"dnat to {plan.destination(m.containerPort)} {note}"
        )
    if plan.snat:
        ip = plan.iface.ip
        source = plan.any_source if plan.masq_all else str(ip)
        script.append(
            f"add rule {where} masquerading {ipx} saddr {source} {ipx} daddr {ip} masquerade {note}"
        )
        if plan.version == 4 and not plan.masq_all:
            script.append(
                f"add rule {where} masquerading ip saddr 127.0.0.1 ip daddr {ip} masquerade {note}"
            )
    netfilter.nft_script("\n".join(script) + "\n")
