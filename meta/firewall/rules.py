"""The firewall plugin's rules: accept a container's traffic through the node's FORWARD path and
optionally isolate bridges from each other (ingressPolicy).

iptables (filter table), names and comments as upstream: FORWARD jumps (at the top) to
CNI-FORWARD, which first jumps to the admin chain (CNI-ADMIN), then accepts replies to and
everything from each container address; CNI-ISOLATION-STAGE-1/2 drop traffic between bridges.
nftables (beyond upstream): see nftables.py; the bridge isolation rules are here.
A pod's ADD and DEL write one transaction per family that reads nothing; the table is read
only when that transaction does not apply (the node's first pod, a repeated call).
"""

import ipaddress

from libcni.netfilter import batch as netfilter

FORWARD_CHAIN = "CNI-FORWARD"
STAGE1, STAGE2 = "CNI-ISOLATION-STAGE-1", "CNI-ISOLATION-STAGE-2"
RULES_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
DEFAULT_POLICY_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"
NFT_TABLE = "inet cni_firewall"


def _q(text: str) -> str:
    return netfilter.quote(text)


def host_cidr(address: str) -> tuple:
    """(family, "ip/32" or "ip/128") of a result address."""
    ip = ipaddress.ip_interface(address).ip
    return ip.version, f"{ip}/{ip.max_prefixlen}"


def container_rules(cidr: str) -> list:
    """The two per-address rules of CNI-FORWARD, spelled as iptables-save prints them."""
    return [
        f"-A {FORWARD_CHAIN} -d {cidr} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {FORWARD_CHAIN} -s {cidr} -j ACCEPT",
    ]


def _without_comment(rule: str) -> str:
    """A saved rule with its `-m comment --comment "..."` removed (comments changed between
    upstream releases; a rule is the same rule whatever its comment says)."""
    import shlex

    words = shlex.split(rule)
    out, skip = [], 0
    for i, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        if word == "-m" and i + 1 < len(words) and words[i + 1] == "comment":
            skip = 3 if i + 2 < len(words) and words[i + 2] == "--comment" else 1
            continue
        out.append(word)
    return " ".join(out)


def _has(table, rule: str) -> bool:
    bare = _without_comment(rule)
    chain = rule.split()[1]
    return any(_without_comment(r) == bare for r in table.rules_of(chain))


def shared_jumps(admin: str) -> list:
    """FORWARD -> CNI-FORWARD -> the admin chain, as iptables-save prints them."""
    return [
        f"-A FORWARD -m comment --comment {_q(RULES_COMMENT)} -j {FORWARD_CHAIN}",
        f"-A {FORWARD_CHAIN} -m comment --comment {_q(ADMIN_COMMENT)} -j {admin}",
    ]


def setup_iptables(family: int, cidrs: list, admin: str, fresh: bool = False) -> None:
    """Open the container's addresses. `fresh`: this attachment had no rules before (its
    first ADD), so when the shared jumps are there (`-C`) its rules are appended in one
    transaction that reads nothing; otherwise the table is read and only what is missing is
    added (a repeated ADD never doubles a rule)."""
    wanted = [r for cidr in cidrs for r in container_rules(cidr)]
    fast = ["-C" + r[2:] for r in shared_jumps(admin)] + wanted
    if fresh and netfilter.try_restore(family, "filter", fast):
        return
    table = netfilter.save(family, "filter")
    lines = [f":{c} - [0:0]" for c in (FORWARD_CHAIN, admin) if c not in table.chains]
    jump, admin_jump = shared_jumps(admin)
    if not _has(table, jump):
        lines.append("-I FORWARD 1" + jump[len("-A FORWARD") :])
    if not _has(table, admin_jump):
        lines.append(f"-I {FORWARD_CHAIN} 1" + admin_jump[len(f"-A {FORWARD_CHAIN}") :])
    lines += [r for r in wanted if r not in table.rules and r not in lines]
    netfilter.restore(family, "filter", lines)


def teardown_iptables(family: int, cidrs: list) -> None:
    """Delete the addresses' rules by their spelling (no read); when one is missing (a
    repeated DEL, a flushed chain), read the table and delete those that are there."""
    doomed = [r for cidr in cidrs for r in container_rules(cidr)]
    if netfilter.try_restore(family, "filter", ["-D" + r[2:] for r in doomed]):
        return
    table = netfilter.save(family, "filter")
    netfilter.restore(family, "filter", ["-D" + r[2:] for r in table.rules if r in doomed])


def check_iptables(family: int, cidrs: list, admin: str) -> str | None:
    wanted = shared_jumps(admin) + [r for cidr in cidrs for r in container_rules(cidr)]
    if netfilter.try_restore(family, "filter", ["-C" + r[2:] for r in wanted]):
        return None
    table = netfilter.save(family, "filter")
    for rule in wanted:
        if not _has(table, rule):
            return f"expected rule {rule[3:]} not found"
    return None


def isolate_iptables(family: int, bridge: str, isolated: bool) -> None:
    """CNI-ISOLATION-STAGE-1/2 for `bridge` (rules are shared by all containers, never removed)."""
    policy = "isolated" if isolated else "same-bridge"
    note = f"-m comment --comment {_q(f'CNI firewall plugin rules (ingressPolicy: {policy})')}"
    default = f"-m comment --comment {_q(DEFAULT_POLICY_COMMENT)}"
    wanted = [
        f"-A FORWARD {default} -j {STAGE1}",
        f"-A {STAGE1} -i {bridge} ! -o {bridge} {note} -j {STAGE2}",
        *([f"-A {STAGE1} -i {bridge} -o {bridge} {note} -j DROP"] if isolated else []),
        f"-A {STAGE1} {default} -j RETURN",
        f"-A {STAGE2} -o {bridge} {default} -j DROP",
        f"-A {STAGE2} {default} -j RETURN",
    ]
    # The bridge's rules are made by its first pod: later ADDs only check them, reading nothing.
    if netfilter.try_restore(family, "filter", ["-C" + r[2:] for r in wanted]):
        return
    table = netfilter.save(family, "filter")
    lines = [f":{c} - [0:0]" for c in (STAGE1, STAGE2) if c not in table.chains]

    def ensure(rule: str, first: bool) -> None:
        chain = rule.split()[1]
        if not _has(table, rule) and rule not in lines:
            lines.append(f"-I {chain} 1{rule[len(chain) + 3 :]}" if first else rule)

    ensure(f"-A FORWARD {default} -j {STAGE1}", first=True)
    ensure(f"-A {STAGE1} -i {bridge} ! -o {bridge} {note} -j {STAGE2}", first=True)
    if isolated:
        ensure(f"-A {STAGE1} -i {bridge} -o {bridge} {note} -j DROP", first=True)
    ensure(f"-A {STAGE1} {default} -j RETURN", first=False)
    ensure(f"-A {STAGE2} -o {bridge} {default} -j DROP", first=True)
    ensure(f"-A {STAGE2} {default} -j RETURN", first=False)
    netfilter.restore(family, "filter", lines)


# -- nftables ------------------------------------------------------------------------------


def _nft_base(admin: str) -> list:
    return [
        f'add table {NFT_TABLE} {{ comment "CNI firewall plugin" ; }}',
        f"add chain {NFT_TABLE} {admin}",
        f"add chain {NFT_TABLE} isolation",
        f"add chain {NFT_TABLE} forward {{ type filter hook forward priority filter ; }}",
    ]


def isolate_nft(bridge: str, isolated: bool) -> None:
    rules = netfilter.nft_rules("chain", *NFT_TABLE.split(), "isolation")
    tag = f"isolation {bridge}"
    if any(r.get("comment", "").startswith(tag) for r in rules):
        return
    script = _nft_base("CNI-ADMIN") + [f"add chain {NFT_TABLE} isolation-out"]
    name = _q(bridge)
    script.append(
        f"add rule {NFT_TABLE} isolation iifname {name} oifname != {name} "
        f"jump isolation-out comment {_q(tag + ' from')}"
    )
    if isolated:
        script.append(
            f"insert rule {NFT_TABLE} isolation iifname {name} oifname {name} drop "
            f"comment {_q(tag + ' within')}"
        )
    script.append(
        f"add rule {NFT_TABLE} isolation-out oifname {name} drop comment {_q(tag + ' to')}"
    )
    netfilter.nft_script("\n".join(script) + "\n")


# -- firewalld (D-Bus, through busctl) ------------------------------------------------------

FIREWALLD = "org.fedoraproject.FirewallD1"


def firewalld_running() -> bool:
    """Upstream's auto-detection: firewalld owns its name on the system bus."""
    import os

    if not os.path.exists("/run/dbus/system_bus_socket") or not netfilter.have("busctl"):
        return False
    out = netfilter.run_quietly(["busctl", "--system", "--no-pager", "--no-legend", "list"])
    return any(line.split()[:1] == [FIREWALLD] for line in out.splitlines())


def firewalld_call(method: str, zone: str, cidr: str) -> str:
    """zone.<method>(zone, source) on firewalld; the reply (or raises CNIError)."""
    return netfilter.run_checked(
        [
            "busctl",
            "--system",
            "call",
            FIREWALLD,
            "/org/fedoraproject/FirewallD1",
            f"{FIREWALLD}.zone",
            method,
            "ss",
            zone,
            cidr,
        ]
    )
