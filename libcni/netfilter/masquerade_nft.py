"""The nftables side of ipMasq: table `inet cni_plugins_masquerade`.

Upstream keeps one rule per address in chain `masq_checks`, found by its comment: every ADD and
DEL has to list the chain, whose length grows with the pods. Here an attachment's rules live
in a chain of its own, `masq-<H(net)>-<H(ifname:cid)>`, reached from `postrouting` through one
verdict-map element per address (`ip saddr vmap @masq_pods4`, `10.1.0.2 : goto masq-...`), so
ADD and DEL name the chain and the keys and read nothing. The kernel refuses an element whose
key is there with another verdict, so a DEL never removes an entry another attachment holds:
the transaction fails and the careful path, which reads the table, takes over. Rules of
upstream's layout (in `masq_checks`, found by comment prefix) are still removed by DEL and GC
(through that careful path) and still matched, `postrouting` ending in `goto masq_checks`.
"""

import ipaddress

from libcni.netfilter import batch as netfilter
from libcni.netfilter.vmaps import AddressMaps

TABLE = "inet cni_plugins_masquerade"
CHECKS = "masq_checks"
TABLE_COMMENT = "Masquerading for plugins from github.com/containernetworking/plugins"
CHECKS_COMMENT = (
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
)
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
MAPS = AddressMaps(TABLE, "masq_pods")


def chain_of(prefix: str) -> str:
    """The attachment's chain; `prefix` is masquerade.nft_prefix (H(net)-H(ifname:cid))."""
    return f"masq-{prefix}"


def _layout() -> list:
    script = [
        f"add table {TABLE} {{ comment {netfilter.nft_string(TABLE_COMMENT)} ; }}",
        f"add chain {TABLE} {CHECKS} {{ comment {netfilter.nft_string(CHECKS_COMMENT)} ; }}",
        f"add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f"flush chain {TABLE} postrouting",
        f"add rule {TABLE} postrouting ip daddr == {MULTICAST[4]} return",
        f"add rule {TABLE} postrouting ip6 daddr == {MULTICAST[6]} return",
    ]
    script += MAPS.declare() + MAPS.dispatch("postrouting", "{ip} saddr vmap @{map}")
    return [*script, f"add rule {TABLE} postrouting goto {CHECKS}"]


def _element(version: int, address, chain: str = "") -> str:
    return MAPS.element(version, address, chain)


def setup(prefix: str, comment: str, interfaces: list, exclude: list) -> None:
    chain = chain_of(prefix)
    note = f"comment {netfilter.nft_string(comment)}"
    pod = [f"add chain {TABLE} {chain}", f"flush chain {TABLE} {chain}"]
    for iface in interfaces:
        ip = "ip" if iface.version == 4 else "ip6"
        pod += [
            f"add rule {TABLE} {chain} {ip} saddr == {iface.ip} {ip} daddr == {kept} accept {note}"
            for kept in exclude
            if kept.version == iface.version
        ]
        pod.append(
            f"add rule {TABLE} {chain} {ip} saddr == {iface.ip} "
            f"{ip} daddr != {iface.network} masquerade {note}"
        )
    pod += [f"add element {_element(i.version, i.ip, chain)}" for i in interfaces]
    if netfilter.nft_try("\n".join(_layout() + pod) + "\n"):
        return
    # An address another attachment still holds (its DEL was missed) passes to this one; rules
    # of upstream's layout for this attachment (a repeated ADD after an upgrade) go.
    listing = netfilter.nft_list("table", *TABLE.split())
    wanted = {(i.version, str(i.ip)) for i in interfaces}
    script = [
        f"delete element {_element(version, address)}"
        for version, address, target in _elements(listing)
        if (version, address) in wanted and target != chain
    ]
    script += _older(listing, lambda c: c.startswith(prefix))
    netfilter.nft_script("\n".join(_layout() + script + pod) + "\n")


def teardown(prefix: str, addresses: list | None) -> None:
    """Remove the attachment's chain and elements (and its rules of upstream's layout)."""
    chain = chain_of(prefix)
    if addresses:
        pairs = [(i.version, i.ip) for i in map(ipaddress.ip_interface, addresses)]
        script = MAPS.declare() + MAPS.forget(chain, pairs)
        if netfilter.nft_try("\n".join(script) + "\n"):
            return
    drop(lambda name: name == chain, lambda c: c.startswith(prefix))


def drop(doomed_chain, doomed_comment) -> None:
    """The careful path: read the table, delete the chains (with their elements) and the rules
    of upstream's layout that the predicates pick."""
    listing = netfilter.nft_list("table", *TABLE.split())
    if not listing:
        return
    chains = {item["chain"]["name"] for item in listing if "chain" in item}
    doomed = {name for name in chains if name.startswith("masq-") and doomed_chain(name)}
    script = [
        f"delete element {_element(version, address)}"
        for version, address, target in _elements(listing)
        if target in doomed
    ]
    script += _older(listing, doomed_comment)
    script += [f"flush chain {TABLE} {c}\ndelete chain {TABLE} {c}" for c in sorted(doomed)]
    if script:
        netfilter.nft_script("\n".join(script) + "\n")


def _older(listing: list, doomed_comment) -> list:
    return [
        f"delete rule {TABLE} {CHECKS} handle {item['rule']['handle']}"
        for item in listing
        if "rule" in item
        and item["rule"]["chain"] == CHECKS
        and doomed_comment(item["rule"].get("comment", ""))
    ]


def _elements(listing: list) -> list:
    """(version, address, target chain) of every element of the two maps."""
    return MAPS.elements(listing)
