"""Per-pod nftables layouts share one idea: a verdict map per IP family whose elements send a
pod's addresses to the pod's own chain, so ADD and DEL add and delete one element by key
instead of scanning rules (bridge/ptp masquerade, firewall). This holds the maps' names and
spells what every such layout writes and reads about them."""

_KINDS = {4: ("ipv4_addr", "ip"), 6: ("ipv6_addr", "ip6")}


class AddressMaps:
    """The two address -> verdict maps of one table, e.g. AddressMaps("inet cni", "pods")
    names `pods4` and `pods6`."""

    def __init__(self, table: str, stem: str) -> None:
        self.table = table
        self.names = {family: f"{stem}{family}" for family in _KINDS}

    def declare(self) -> list:
        """`add map` for both (an existing map is left as it is)."""
        return [
            f"add map {self.table} {self.names[f]} {{ type {kind} : verdict ; }}"
            for f, (kind, _) in _KINDS.items()
        ]

    def dispatch(self, chain: str, *matches: str) -> list:
        """Rules in `chain` that look each packet up in the maps: per family, one rule per
        match template, where `{ip}` is the family's keyword (`ip`/`ip6`) and `{map}` the map,
        e.g. "{ip} saddr vmap @{map}"."""
        return [
            f"add rule {self.table} {chain} " + match.format(ip=ip, map=self.names[f])
            for f, (_, ip) in _KINDS.items()
            for match in matches
        ]

    def element(self, family: int, address, chain: str = "") -> str:
        """What `add element` / `delete element` take: the address, going to `chain`."""
        verdict = f" : goto {chain}" if chain else ""
        return f"{self.table} {self.names[family]} {{ {address}{verdict} }}"

    def forget(self, chain: str, addresses) -> list:
        """A script that deletes a pod's elements, (family, address) pairs, and its `chain`.
        Adding an element that is there with the pod's verdict changes nothing and makes the
        delete that follows valid whether or not it was there; a key another pod holds makes
        the whole transaction fail, so the caller falls back to reading the table."""
        script = [f"add chain {self.table} {chain}"]
        for family, address in addresses:
            script += [
                f"add element {self.element(family, address, chain)}",
                f"delete element {self.element(family, address)}",
            ]
        return [*script, f"flush chain {self.table} {chain}", f"delete chain {self.table} {chain}"]

    def elements(self, listing: list) -> list:
        """(family, address, target chain) of every element of the two maps in `listing`
        (`nft -j list` objects)."""
        found = []
        for item in listing:
            table_map = item.get("map")
            if not table_map:
                continue
            family = next((f for f, n in self.names.items() if n == table_map["name"]), 0)
            for key, verdict in table_map.get("elem", []) if family else []:
                target = (verdict.get("goto") or verdict.get("jump") or {}).get("target", "")
                found.append((family, str(key), target))
        return found
