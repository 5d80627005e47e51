"""The firewall's nftables backend (beyond upstream): table `inet cni_firewall`.

Layout: base chain `forward` jumps to `isolation` and the admin chain (CNI-ADMIN), then to
`pods`, which looks the packet's addresses up in one verdict map per family:
    ip saddr vmap @pods4                                (everything from a pod)
    ct state established,related ip daddr vmap @pods4   (replies to a pod)
An element `10.1.0.2 : goto pod-<H(net)>-<H(ifname:cid)>` leads to the attachment's own chain,
whose one rule accepts and is commented `cni-firewall <net> <cid> <ifname>`.

So a pod's ADD and DEL touch one chain and one element per address, found by name and key,
never by reading the table: the cost stays flat however many pods the node has. The kernel
refuses an element whose key is there with another verdict, so a DEL never removes a map
entry another attachment holds (an address reused after a missed DEL): the transaction fails
and the careful path, which reads the table, takes over. It also removes rules of the older
layout (per-pod rules in `forward`, found by comment).
"""

import ipaddress

from libcni.netfilter import batch as netfilter
from libcni.netfilter.vmaps import AddressMaps
from libcni.protocol.names import sha512_hex

TABLE = "inet cni_firewall"
RULES_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
PODS_COMMENT = "CNI firewall plugin pods"
MAPS = AddressMaps(TABLE, "pods")


def comment_of(network: str, container_id: str, ifname: str) -> str:
    return f"cni-firewall {network} {container_id} {ifname}"


def chain_of(network: str, container_id: str, ifname: str) -> str:
    return f"pod-{sha512_hex(network)[:16]}-{sha512_hex(f'{ifname}:{container_id}')[:16]}"


def _q(text: str) -> str:
    return netfilter.quote(text)


def _addresses(cidrs: list) -> list:
    """(family, bare address) of "ip/32" strings."""
    return [(i.version, str(i.ip)) for i in map(ipaddress.ip_interface, cidrs)]


def _element(family: int, address: str, chain: str = "") -> str:
    return MAPS.element(family, address, chain)


def _layout(admin: str) -> list:
    """The table, its chains and maps (each `add` leaves an existing one as it is)."""
    script = [
        f'add table {TABLE} {{ comment "CNI firewall plugin" ; }}',
        f"add chain {TABLE} {admin}",
        f"add chain {TABLE} isolation",
        f"add chain {TABLE} forward {{ type filter hook forward priority filter ; }}",
        f"add chain {TABLE} pods",
        f"flush chain {TABLE} pods",
    ]
    script += MAPS.declare() + MAPS.dispatch(
        "pods", "{ip} saddr vmap @{map}", "ct state established,related {ip} daddr vmap @{map}"
    )
    return script


def _attachment(cidrs: list, network: str, container_id: str, ifname: str) -> list:
    """The attachment's chain (re)made, and its map elements."""
    chain = chain_of(network, container_id, ifname)
    comment = comment_of(network, container_id, ifname)
    script = [
        f"add chain {TABLE} {chain}",
        f"flush chain {TABLE} {chain}",
        f"add rule {TABLE} {chain} accept comment {_q(comment)}",
    ]
    script += [f"add element {_element(f, a, chain)}" for f, a in _addresses(cidrs)]
    return script


def setup(cidrs: list, admin: str, network: str, container_id: str, ifname: str) -> None:
    pod = _attachment(cidrs, network, container_id, ifname)
    if netfilter.nft_try("\n".join(pod) + "\n"):
        return  # the usual ADD: table and maps there, the addresses free or already ours
    listing = netfilter.nft_list("table", *TABLE.split())
    rules = [item["rule"] for item in listing if "rule" in item]
    script = _layout(admin)
    forward = {r.get("comment") for r in rules if r["chain"] == "forward"}
    if RULES_COMMENT not in forward:
        script.append(f"add rule {TABLE} forward jump isolation comment {_q(RULES_COMMENT)}")
        script.append(f"add rule {TABLE} forward jump {admin} comment {_q(ADMIN_COMMENT)}")
    if PODS_COMMENT not in forward:
        script.append(f"add rule {TABLE} forward jump pods comment {_q(PODS_COMMENT)}")
    # Addresses another attachment still holds (its DEL was missed) pass to this one.
    wanted = {(f, a) for f, a in _addresses(cidrs)}
    script += [
        f"delete element {_element(family, address)}"
        for family, address, _ in _elements(listing)
        if (family, address) in wanted
    ]
    script += _older_rules(rules, {comment_of(network, container_id, ifname)})
    netfilter.nft_script("\n".join(script + pod) + "\n")


def teardown(network: str, container_id: str, ifname: str, cidrs: list) -> None:
    """Remove the attachment's chain and elements; absent ones are not an error."""
    chain = chain_of(network, container_id, ifname)
    if cidrs:
        script = MAPS.forget(chain, _addresses(cidrs))
        if netfilter.nft_try("\n".join(script) + "\n"):
            return
    _drop(lambda name: name == chain, {comment_of(network, container_id, ifname)})


def gc(network: str, valid: list) -> None:
    """Remove the chains, elements and older rules of this network's invalid attachments."""
    keep_chains = {chain_of(network, cid, ifname) for cid, ifname in valid}
    keep = {comment_of(network, cid, ifname) for cid, ifname in valid}
    ours = f"pod-{sha512_hex(network)[:16]}-"
    prefix = f"cni-firewall {network} "
    _drop(
        lambda name: name.startswith(ours) and name not in keep_chains,
        lambda comment: comment.startswith(prefix) and comment not in keep,
    )


def _drop(doomed_chain, doomed_comments) -> None:
    """The careful path: read the table, delete what the predicates pick."""
    listing = netfilter.nft_list("table", *TABLE.split())
    if not listing:
        return
    chains = {item["chain"]["name"] for item in listing if "chain" in item}
    doomed = {name for name in chains if doomed_chain(name)}
    script = [
        f"delete element {_element(family, address)}"
        for family, address, target in _elements(listing)
        if target in doomed
    ]
    script += [f"flush chain {TABLE} {name}\ndelete chain {TABLE} {name}" for name in doomed]
    rules = [item["rule"] for item in listing if "rule" in item]
    script += _older_rules(rules, doomed_comments)
    if script:
        netfilter.nft_script("\n".join(script) + "\n")


def _older_rules(rules: list, doomed) -> list:
    """Deletes of per-pod rules in `forward` (the layout before the maps), by comment."""
    pick = doomed if callable(doomed) else doomed.__contains__
    return [
        f"delete rule {TABLE} forward handle {r['handle']}"
        for r in rules
        if r["chain"] == "forward" and pick(r.get("comment", ""))
    ]


def _elements(listing: list) -> list:
    """(family, address, target chain) of every element of the pod maps."""
    return MAPS.elements(listing)


def check(cidrs: list, network: str, container_id: str, ifname: str) -> str | None:
    chain = chain_of(network, container_id, ifname)
    comment = comment_of(network, container_id, ifname)
    listing = netfilter.nft_list("table", *TABLE.split())
    rules = [item["rule"] for item in listing if "rule" in item]
    mapped = {(f, a) for f, a, target in _elements(listing) if target == chain}
    accepts = [r for r in rules if r["chain"] == chain and r.get("comment") == comment]
    older = sum(1 for r in rules if r["chain"] == "forward" and r.get("comment") == comment)
    missing = [a for f, a in _addresses(cidrs) if (f, a) not in mapped]
    if older >= 2 * len(cidrs) or (accepts and not missing):
        return None
    return f"expected the rules of {container_id}/{ifname} for {', '.join(cidrs)} in {TABLE}"
