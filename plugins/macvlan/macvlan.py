"""macvlan: give the container its own MAC address on a host interface (the "master").

The macvlan link is created directly inside the container netns on top of `master` (by
default the interface of the host's default route), addressed by the optional IPAM plugin.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr
from libcni.protocol import skel
from libcni.protocol.config import NetConf, Struct
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result, parse_dns
from libcni.rollback import Rollback

# macvlan modes by config name; "source" goes beyond upstream (it needs a MAC list set later).
MODES = ("bridge", "private", "vepa", "passthru", "source")
UINT32_MAX = 2**32 - 1


class RuntimeConfig(Struct):
    mac: str = ""


class MacvlanConf(NetConf):
    master: str = ""
    mode: str = ""
    mtu: int = 0
    mac: str = ""
    linkInContainer: bool = False
    bcqueuelen: int = 0
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def mode_of(conf: MacvlanConf) -> str:
    mode = conf.mode or "bridge"
    if mode not in MODES:
        raise config_error(f'unknown macvlan mode: "{conf.mode}"', f"use one of {', '.join(MODES)}")
    return mode


def master_netns(call: skel.Call, conf: MacvlanConf) -> str | None:
    """Where the master lives: the host netns, or the container's with linkInContainer."""
    return call.netns if conf.linkInContainer else None


def load_conf(call: skel.Call) -> tuple[MacvlanConf, links.Link]:
    """Decode and validate; resolve the master and the MAC like upstream's loadConf."""
    conf = call.load(MacvlanConf)
    mode_of(conf)
    if not 0 <= conf.bcqueuelen <= UINT32_MAX:
        raise config_error(f"invalid bcqueuelen {conf.bcqueuelen}: must be [0, {UINT32_MAX}]")
    where = master_netns(call, conf)
    if not conf.master:
        conf.master = links.default_route_interface(where)
    master = links.require_master(where, conf.master)
    if not 0 <= conf.mtu <= master.mtu:
        raise config_error(f"invalid MTU {conf.mtu}, must be [0, master MTU({master.mtu})]")
    runtime_mac = conf.runtimeConfig.mac if conf.runtimeConfig is not None else ""
    conf.mac = macaddr.requested_mac(call, conf.mac, runtime_mac)
    return conf, master


def add(call: skel.Call) -> Result:
    conf, master = load_conf(call)
    extra: dict = {"macvlan_bc_queue_len": conf.bcqueuelen} if conf.bcqueuelen else {}
    result = Result(call.cni_version)
    with Rollback() as undo:
        created = links.create_child(
            "macvlan",
            call.netns,
            call.ifname,
            master,
            master_in_container=conf.linkInContainer,
            mtu=conf.mtu,
            mac=conf.mac,
            macvlan_mode=mode_of(conf),
            **extra,
        )
        undo.push(links.delete, call.netns, call.ifname)
        result.add_interface(**created)
        kind = ipam.type_of(conf)
        if kind:
            allocated = ipam.allocate(call, kind, undo)
            result.ips = [dict(ip, interface=0) for ip in allocated.ips]
            result.routes = allocated.routes
            links.notify_neighbours(call.netns, call.ifname)
            iface.configure(call.netns, call.ifname, result)
        else:
            links.set_up(call.netns, call.ifname)
    # The config's dns replaces the IPAM's, even when empty (upstream does the same).
    result.dns = parse_dns(vars(conf.dns)) if conf.dns is not None else {}
    return result


def delete(call: skel.Call) -> None:
    # Neither the master nor CNI_ARGS are needed to clean up, so neither is looked at.
    conf = call.load(MacvlanConf)
    ipam.release_then(call, conf, links.delete, call.netns, call.ifname)


def check(call: skel.Call) -> None:
    conf, _ = load_conf(call)
    if ipam.type_of(conf):
        ipam.check(call, ipam.type_of(conf))
    previous = call.prev_result()
    if previous is None:
        raise CNIError(INTERNAL, "required prevResult missing")
    entry = linkcheck.container_interface(previous, call.ifname, call.netns)
    linkcheck.check_interface(call.netns, entry, "macvlan")
    actual = links.kind_data(call.netns, call.ifname).get("IFLA_MACVLAN_MODE")
    if actual != mode_of(conf):
        expected = mode_of(conf)
        raise CNIError(
            INTERNAL, f"container macvlan mode {actual} does not match expected value: {expected}"
        )
    linkcheck.check_addresses(call.netns, call.ifname, previous)
    linkcheck.check_routes(call.netns, previous.routes)


def status(call: skel.Call) -> None:
    conf = call.load(MacvlanConf)
    ipam.forward(call, conf, "STATUS")
    links.require_master_for_status(conf.master, conf.linkInContainer)


def gc(call: skel.Call) -> None:
    # Links die with their netns; only the IPAM has state to collect.
    ipam.forward(call, call.load(MacvlanConf), "GC")


PLUGIN = skel.Plugin("macvlan", add=add, delete=delete, check=check, status=status, gc=gc)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
