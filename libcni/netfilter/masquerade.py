"""IP masquerade for bridge and ptp (`ipMasq`): traffic from a container's addresses to anywhere
outside their subnet leaves the node with the node's address.

Both backends write exactly what upstream writes, so a node upgraded from (or downgraded to)
the Go plugins deletes what the other made:
- iptables: nat chain `CNI-<sha512(net+cid)>` with ACCEPT for the subnet and MASQUERADE for
  non-multicast destinations, jumped to from POSTROUTING for `-s <ip>`, every rule commented
  `name: "<net>" id: "<cid>"`.
- nftables: table `inet cni_plugins_masquerade`, rules commented
  `<H(net)>-<H(ifname:cid)>, net: .., if: .., id: ..` (upstream's, in chain `masq_checks`, are
  still matched and removed; ours are in a chain per attachment: see masquerade_nft.py).
Beyond upstream: `exclude` (bridge's `ipMasqExclude`, e.g. a Kubernetes cluster CIDR) adds
ACCEPT (nftables: accept) rules for those destinations ahead of the MASQUERADE, in the same
per-attachment chain or with the same comment, so traffic between pods of different nodes keeps
its source address and goes with the attachment's other rules. Teardown needs no addresses
(iptables rules are found by their jump target), so a DEL whose netns is gone still cleans up;
and GC removes what containers no longer valid left behind.
"""

import ipaddress

from libcni.netfilter import batch as netfilter
from libcni.protocol.errors import INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.names import hashed_name, sha512_hex

BACKENDS = ("iptables", "nftables")
NFT_COMMENT_MAX = 128
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def choose_backend(configured: str) -> str:
    """`ipMasqBackend`, or upstream's default: iptables unless iptables does not work (a
    probe, not only a look for the binary, cached per boot: see probe.py) and nftables does."""
    if configured:
        if configured not in BACKENDS:
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f'unknown ipmasq backend "{configured}"',
                'use "iptables" or "nftables", or leave it out to pick automatically',
            )
        return configured
    from libcni.netfilter import probe

    return probe.default_backend()


# -- names ---------------------------------------------------------------------------------


def chain_name(network: str, container_id: str) -> str:
    return hashed_name("CNI-", network, container_id)


def iptables_comment(network: str, container_id: str) -> str:
    return f"name: {netfilter.quote(network)} id: {netfilter.quote(container_id)}"


def nft_prefix(network: str, ifname: str, container_id: str) -> str:
    return sha512_hex(network)[:16] + "-" + sha512_hex(f"{ifname}:{container_id}")[:16]


def nft_comment(network: str, ifname: str, container_id: str) -> str:
    plain = [s.replace('"', "") for s in (network, ifname, container_id)]
    text = f"{nft_prefix(network, ifname, container_id)}, net: {plain[0]}, if: {plain[1]}, "
    return (text + f"id: {plain[2]}")[:NFT_COMMENT_MAX]


# -- setup ---------------------------------------------------------------------------------


def parse_exclude(cidrs: list | None) -> list:
    """`ipMasqExclude` as networks (host bits cleared, as iptables-save prints them)."""
    networks = []
    for cidr in cidrs or []:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f'invalid CIDR "{cidr}" in ipMasqExclude',
                'give destinations that keep the pod\'s source address, e.g. "10.244.0.0/16"',
            ) from None
    return networks


def setup(
    backend: str,
    network: str,
    ifname: str,
    container_id: str,
    addresses: list,
    exclude: list | None = None,
) -> None:
    """Masquerade for `addresses` ("ip/prefix" strings) of one attachment, except towards the
    networks in `exclude` (see parse_exclude)."""
    exclude = exclude or []
    interfaces = [ipaddress.ip_interface(a) for a in addresses]
    if backend == "nftables":
        _setup_nft(network, ifname, container_id, interfaces, exclude)
        return
    for family in (4, 6):
        mine = [i for i in interfaces if i.version == family]
        if mine:
            kept = [n for n in exclude if n.version == family]
            _setup_iptables(family, network, container_id, mine, kept)


def _setup_iptables(
    family: int, network: str, container_id: str, interfaces: list, exclude: list
) -> None:
    chain = chain_name(network, container_id)
    comment = netfilter.quote(iptables_comment(network, container_id))
    wanted: list = []
    for iface in interfaces:
        host_len = 32 if family == 4 else 128
        # The order and spelling of iptables-save, so "already there" is a string compare.
        rules = [
            f"-A {chain} -d {iface.network} -m comment --comment {comment} -j ACCEPT",
            *[f"-A {chain} -d {kept} -m comment --comment {comment} -j ACCEPT" for kept in exclude],
            f"-A {chain} ! -d {MULTICAST[family]} -m comment --comment {comment} -j MASQUERADE",
            f"-A POSTROUTING -s {iface.ip}/{host_len} -m comment --comment {comment} -j {chain}",
        ]
        wanted += [rule for rule in rules if rule not in wanted]
    # A new attachment (the usual ADD) creates its chain: `-N` fails when the chain is there
    # (a repeated ADD, a leftover), and only then is the table read.
    if netfilter.try_restore(family, "nat", [f"-N {chain}", *wanted]):
        return
    table = netfilter.save(family, "nat")
    present = set(table.rules)
    lines = [] if chain in table.chains else [f":{chain} - [0:0]"]
    lines += [rule for rule in wanted if rule not in present]
    netfilter.restore(family, "nat", lines)


def _setup_nft(
    network: str, ifname: str, container_id: str, interfaces: list, exclude: list
) -> None:
    from libcni.netfilter import masquerade_nft

    prefix = nft_prefix(network, ifname, container_id)
    comment = nft_comment(network, ifname, container_id)
    masquerade_nft.setup(prefix, comment, interfaces, exclude)


def setup_undoably(
    undo, backend: str, network: str, call, result, exclude: list | None = None
) -> None:
    """ADD's masquerade for every result address, registered first in the ADD's rollback."""
    addresses = [ip["address"] for ip in result.ips]
    undo.push(teardown, network, call.ifname, call.container_id, addresses)
    setup(backend, network, call.ifname, call.container_id, addresses, exclude)


# -- teardown ------------------------------------------------------------------------------


def teardown_for_del(network: str, call, addresses: list | None) -> None:
    """DEL's teardown: the addresses found on the deleted link, else the cached prevResult's.
    Beyond upstream, the rules go even when the netns (and so the addresses) are gone.

    Only the backend the config names (or the node's default) is looked at: looking at the
    other one too would cost every DEL a process and a read of rules that are not there. A
    config whose backend changed since ADD leaves the old rules to GC, which looks at both."""
    if not addresses:
        previous = call.prev_result()
        addresses = [ip["address"] for ip in previous.ips] if previous else None
    configured = call.conf.get("ipMasqBackend")
    backend = configured if configured in BACKENDS else choose_backend("")
    teardown(network, call.ifname, call.container_id, addresses, backends=(backend,))


def teardown(
    network: str,
    ifname: str,
    container_id: str,
    addresses: list | None = None,
    backends=BACKENDS,
) -> None:
    """Remove the attachment's masquerade in `backends`; absent rules are not an error.

    `addresses` narrow which IP families to look at (None: both) and let the iptables jumps
    be deleted without reading the table.
    """
    if "nftables" in backends:
        from libcni.netfilter import masquerade_nft

        masquerade_nft.teardown(nft_prefix(network, ifname, container_id), addresses)
    if "iptables" not in backends:
        return
    families = {4, 6}
    if addresses:
        families = {ipaddress.ip_interface(a).version for a in addresses}
    chain = chain_name(network, container_id)
    comment = netfilter.quote(iptables_comment(network, container_id))
    for family in sorted(families):
        sources = [
            f"{i.ip}/{i.max_prefixlen}"
            for i in map(ipaddress.ip_interface, addresses or [])
            if i.version == family
        ]
        # With the addresses the jumps are deleted by their spelling and the chain by its
        # name, in one transaction that reads nothing. It fails when a rule is not there
        # (a repeated DEL, a flushed table, other addresses): then the careful path.
        jumps = [
            f"-D POSTROUTING -s {s} -m comment --comment {comment} -j {chain}" for s in sources
        ]
        if sources and netfilter.try_restore(family, "nat", [*jumps, f"-F {chain}", f"-X {chain}"]):
            continue
        if not chains_exist(family, "nat", [chain]):
            continue
        _drop_iptables_chains(family, {chain})


def chains_exist(family: int, table: str, chains: list) -> bool:
    """Is any of `chains` in the table? Asked without listing it: creating and removing them
    in a transaction succeeds only when none exists (and then changes nothing). No chain, no
    jump to it either (iptables refuses a jump to a missing chain)."""
    lines = [f"-N {c}" for c in chains] + [f"-X {c}" for c in chains]
    return not netfilter.try_restore(family, table, lines)


def _drop_iptables_chains(family: int, chains: set) -> None:
    table = netfilter.save(family, "nat")
    lines = [
        "-D" + rule[2:]
        for rule in table.rules_of("POSTROUTING")
        if netfilter.target_of(rule) in chains
    ]
    for chain in sorted(chains & table.chains):
        lines += [f"-F {chain}", f"-X {chain}"]
    netfilter.restore(family, "nat", lines)


# -- GC ------------------------------------------------------------------------------------


def gc(network: str, valid: list) -> None:
    """Remove this network's masquerade for attachments not in `valid` [(cid, ifname)]."""
    valid_chains = {chain_name(network, cid) for cid, _ in valid}
    for family in (4, 6):
        table = netfilter.save(family, "nat")
        ours = set()
        for rule in table.rules_of("POSTROUTING"):
            target = netfilter.target_of(rule) or ""
            comment = netfilter.comment_of(rule) or ""
            if _names_network(comment, network) and target.startswith("CNI-"):
                ours.add(target)
        if ours - valid_chains:
            _drop_iptables_chains(family, ours - valid_chains)
    from libcni.netfilter import masquerade_nft

    network_hash = sha512_hex(network)[:16] + "-"
    valid_comments = {nft_comment(network, ifname, cid) for cid, ifname in valid}
    valid_chains = {
        masquerade_nft.chain_of(nft_prefix(network, ifname, cid)) for cid, ifname in valid
    }
    masquerade_nft.drop(
        lambda name: name.startswith(f"masq-{network_hash}") and name not in valid_chains,
        lambda c: c.startswith(network_hash) and c not in valid_comments,
    )


def _names_network(comment: str, network: str) -> bool:
    return comment.startswith(f"name: {netfilter.quote(network)} id: ")
