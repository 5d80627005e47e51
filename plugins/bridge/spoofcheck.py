"""bridge's `macspoofchk`: frames entering the bridge from a container's port must carry that
container's MAC. nftables objects and comments as upstream's pkg/link, so either side's DEL
removes what the other made:
table `bridge nat`, base chain PREROUTING (filter, prerouting, priority -300), per attachment
`cni-br-iface-<cid>-<ifname>` (jumped to by iifname) and `...-mac` (return for the MAC, drop).
"""

from libcni.netfilter import batch as netfilter

TABLE = "bridge nat"


def _ref(container_id: str, ifname: str) -> str:
    return f"{container_id}-{ifname}"


def chains(container_id: str, ifname: str) -> tuple:
    iface_chain = "cni-br-iface-" + _ref(container_id, ifname)
    return iface_chain, iface_chain + "-mac"


def comment(container_id: str, ifname: str) -> str:
    return "macspoofchk-" + _ref(container_id, ifname)


def setup(host_port: str, mac: str, container_id: str, ifname: str) -> None:
    iface_chain, mac_chain = chains(container_id, ifname)
    note = f"comment {netfilter.nft_string(comment(container_id, ifname))}"
    netfilter.nft_script(
        "\n".join(
            [
                f"add table {TABLE}",
                f"add chain {TABLE} PREROUTING "
                "{ type filter hook prerouting priority -300 ; policy accept ; }",
                f"add chain {TABLE} {iface_chain}",
                f"add chain {TABLE} {mac_chain}",
                f"flush chain {TABLE} {iface_chain}",
                f"flush chain {TABLE} {mac_chain}",
                f"add rule {TABLE} PREROUTING iifname {netfilter.nft_string(host_port)} "
                f"jump {iface_chain} {note}",
                f"add rule {TABLE} {iface_chain} jump {mac_chain} {note}",
                f"add rule {TABLE} {mac_chain} ether saddr {mac} return {note}",
                f"add rule {TABLE} {mac_chain} drop {note}",
                "",
            ]
        )
    )


def teardown(container_id: str, ifname: str) -> None:
    """Remove the attachment's jump and chains; whatever is already gone is skipped."""
    iface_chain, mac_chain = chains(container_id, ifname)
    existing = netfilter.nft_list("table", "bridge", "nat")
    names = {item["chain"]["name"] for item in existing if "chain" in item}
    script = [
        f"delete rule {TABLE} PREROUTING handle {item['rule']['handle']}"
        for item in existing
        if "rule" in item
        and item["rule"]["chain"] == "PREROUTING"
        and item["rule"].get("comment") == comment(container_id, ifname)
    ]
    # A chain must be empty and unreferenced before it can go.
    gone = [c for c in (iface_chain, mac_chain) if c in names]
    script += [f"flush chain {TABLE} {c}" for c in gone]
    script += [f"delete chain {TABLE} {c}" for c in gone]
    if script:
        netfilter.nft_script("\n".join(script) + "\n")
