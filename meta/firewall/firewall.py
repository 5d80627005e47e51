"""firewall: let a container's traffic through the node's FORWARD path (for nodes whose policy
drops forwarded traffic), optionally isolating bridges from each other (`ingressPolicy`).

Backends: iptables and firewalld as upstream, plus nftables. An empty `backend` picks like
upstream: firewalld when it runs on the system bus, else iptables.

State and how DEL/GC find it without a prevResult: nftables rules are commented with network,
container and interface; iptables rules and firewalld sources carry only an address, so ADD
keeps a per-attachment record of them (see record.py; `dataDir`, beyond upstream).
"""

from libcni.protocol import skel
from libcni.protocol.config import NetConf
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result
from libcni.protocol.version import starting_from
from meta.firewall import nftables, record
from meta.firewall import rules as fwrules

BACKENDS = ("iptables", "firewalld", "nftables")
POLICIES = ("", "open", "same-bridge", "isolated")


class FirewallConf(NetConf):
    backend: str = ""
    iptablesAdminChainName: str = ""
    firewalldZone: str = ""
    ingressPolicy: str = ""
    dataDir: str = ""


def load_conf(call: skel.Call) -> FirewallConf:
    conf = call.load(FirewallConf)
    if conf.backend not in ("", *BACKENDS):
        raise config_error(
            f'unknown firewall backend "{conf.backend}"',
            'use "iptables", "firewalld" or "nftables", or leave it empty to pick automatically',
        )
    if conf.ingressPolicy not in POLICIES:
        raise config_error(
            f'unknown ingress policy: "{conf.ingressPolicy}"', "use open, same-bridge or isolated"
        )
    _check_chain_name(conf.iptablesAdminChainName)
    conf.backend = conf.backend or ("firewalld" if fwrules.firewalld_running() else "iptables")
    conf.iptablesAdminChainName = conf.iptablesAdminChainName or "CNI-ADMIN"
    conf.firewalldZone = conf.firewalldZone or "trusted"
    conf.dataDir = conf.dataDir or record.DEFAULT_DIR
    return conf


def _check_chain_name(name: str) -> None:
    """Refuse an admin chain name iptables would refuse, before anything is written (its record
    included): at most 28 bytes, printable, no blank, not an option."""
    if not name:
        return
    if len(name.encode()) > 28 or not name.isprintable() or " " in name or name[0] in "-!":
        raise config_error(
            f"invalid iptablesAdminChainName {name!r}",
            "an iptables chain name: 1 to 28 printable characters, no blanks, not starting "
            'with "-" or "!" (the default is CNI-ADMIN)',
        )


def addresses(result: Result) -> dict:
    """{family: ["ip/32", ...]} of every address in the result (any interface, as upstream)."""
    return by_family_of([entry["address"] for entry in result.ips])


def by_family_of(cidrs: list) -> dict:
    found: dict = {4: [], 6: []}
    for cidr in cidrs:
        family, host = fwrules.host_cidr(cidr)
        found[family].append(host)
    return found


def prev_result(call: skel.Call) -> Result:
    previous = call.chained_result("missing prevResult from earlier plugin")
    return previous


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    previous = prev_result(call)
    by_family = addresses(previous)
    fresh = False
    if conf.backend != "nftables":
        # No record yet: the attachment's first ADD, whose rules cannot be there already.
        fresh = record.load(conf.dataDir, conf.name, call.container_id, call.ifname) is None
        # Written first: a DEL after a failed ADD then still finds what was opened.
        note = {"backend": conf.backend, "addresses": by_family[4] + by_family[6]}
        if conf.backend == "firewalld":
            note["zone"] = conf.firewalldZone
        try:
            record.save(conf.dataDir, conf.name, call.container_id, call.ifname, note)
        except OSError as err:
            raise CNIError(
                INTERNAL,
                f"failed to write the firewall record in {conf.dataDir}: {err.strerror}",
                "DEL and GC find iptables/firewalld rules there; set dataDir to a writable folder",
            ) from None
    if conf.backend == "firewalld":
        for cidr in by_family[4] + by_family[6]:
            try:
                fwrules.firewalld_call("addSource", conf.firewalldZone, cidr)
            except CNIError as err:
                if "ZONE_ALREADY_SET" not in err.msg:
                    raise
    elif conf.backend == "nftables":
        cidrs = by_family[4] + by_family[6]
        nftables.setup(
            cidrs, conf.iptablesAdminChainName, conf.name, call.container_id, call.ifname
        )
    else:
        for family, cidrs in by_family.items():
            if cidrs:
                fwrules.setup_iptables(family, cidrs, conf.iptablesAdminChainName, fresh)
    if conf.ingressPolicy in ("same-bridge", "isolated"):
        isolate(conf, previous, by_family)
    return previous


def isolate(conf: FirewallConf, previous: Result, by_family: dict) -> None:
    """Bridge isolation, always raw netfilter (even with firewalld), as upstream."""
    if not previous.interfaces or not previous.interfaces[0].get("name"):
        raise CNIError(
            INTERNAL,
            f'interface needs to be set for ingress policy "{conf.ingressPolicy}", '
            'make sure to chain "firewall" plugin with "bridge"',
        )
    bridge = previous.interfaces[0]["name"]
    isolated = conf.ingressPolicy == "isolated"
    if conf.backend == "nftables":
        fwrules.isolate_nft(bridge, isolated)
        return
    for family, cidrs in by_family.items():
        if cidrs:
            fwrules.isolate_iptables(family, bridge, isolated)


def delete(call: skel.Call) -> None:
    conf = load_conf(call)
    previous = call.prev_result()
    if conf.backend == "nftables":
        known = _cidrs(addresses(previous)) if previous is not None else []
        nftables.teardown(conf.name, call.container_id, call.ifname, known)
    kept = record.load(conf.dataDir, conf.name, call.container_id, call.ifname)
    cidrs = record.addresses_of(kept)
    if previous is not None:
        cidrs += [a for a in _cidrs(addresses(previous)) if a not in cidrs]
    if not cidrs and kept is None and conf.backend != "nftables":
        # No record (an ADD by the Go plugin) and no prevResult: the container's interface
        # still has the addresses on the first DEL, which runs before the main plugin's.
        from libcni.kernel import veth

        cidrs = _cidrs(by_family_of(veth.global_addresses(call.netns, call.ifname)))
    backend = kept.get("backend", conf.backend) if kept else conf.backend
    zone = kept.get("zone", conf.firewalldZone) if kept else conf.firewalldZone
    remove_addresses(backend, str(zone), cidrs)
    record.remove(conf.dataDir, conf.name, call.container_id, call.ifname)


def _cidrs(by_family: dict) -> list:
    return by_family[4] + by_family[6]


def remove_addresses(backend: str, zone: str, cidrs: list) -> None:
    """Close what ADD opened for `cidrs` ("ip/32" ...) in an address-keyed backend."""
    if backend == "firewalld":
        for cidr in cidrs:
            try:
                fwrules.firewalld_call("removeSource", zone, cidr)
            except CNIError:
                pass  # already gone: DEL is best effort
    elif backend == "iptables":
        for family, mine in by_family_of(cidrs).items():
            if mine:
                fwrules.teardown_iptables(family, mine)


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    by_family = addresses(prev_result(call))
    if conf.backend == "firewalld":
        for cidr in by_family[4] + by_family[6]:
            reply = fwrules.firewalld_call("querySource", conf.firewalldZone, cidr)
            if "true" not in reply:
                raise CNIError(
                    INTERNAL, f"source {cidr} not in firewalld zone {conf.firewalldZone}"
                )
        return
    if conf.backend == "nftables":
        cidrs = by_family[4] + by_family[6]
        missing = nftables.check(cidrs, conf.name, call.container_id, call.ifname)
    else:
        missing = None
        for family, cidrs in by_family.items():
            if cidrs and missing is None:
                missing = fwrules.check_iptables(family, cidrs, conf.iptablesAdminChainName)
    if missing:
        raise CNIError(INTERNAL, missing)


def gc(call: skel.Call) -> None:
    conf = load_conf(call)
    valid = call.valid_attachments()
    if conf.backend == "nftables":
        nftables.gc(conf.name, valid)
    records = record.all_of(conf.dataDir, conf.name)
    # An address a valid attachment holds now (reused after a missed DEL) stays open.
    held = {a for key in valid for a in record.addresses_of(records.get(key))}
    for (container_id, ifname), kept in records.items():
        if (container_id, ifname) in valid:
            continue
        cidrs = [a for a in record.addresses_of(kept) if a not in held]
        zone = str(kept.get("zone", conf.firewalldZone))
        remove_addresses(str(kept.get("backend", "iptables")), zone, cidrs)
        record.remove(conf.dataDir, conf.name, container_id, ifname)


PLUGIN = skel.Plugin(
    "firewall",
    supported_versions=starting_from("0.4.0"),
    add=add,
    check=check,
    delete=delete,
    gc=gc,
)
