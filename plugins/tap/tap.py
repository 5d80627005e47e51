"""tap: a persistent tap device in the container netns, for a VM or userspace stack to open.

The tap is created inside the container netns (optionally owned by a uid/gid, multi-queue, a
port of a bridge that already exists there) and addressed by the optional IPAM plugin.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr
from libcni.protocol import skel
from libcni.protocol.config import NetConf, Struct
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result, parse_dns
from libcni.rollback import Rollback
from plugins.tap import tapdev

UINT32_MAX = 2**32 - 1


class RuntimeConfig(Struct):
    mac: str = ""


class TapConf(NetConf):
    multiQueue: bool = False
    mtu: int = 0
    mac: str = ""
    owner: int | None = None
    group: int | None = None
    selinuxContext: str = ""
    bridge: str = ""
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def load_conf(call: skel.Call) -> TapConf:
    conf = call.load(TapConf)
    for key in ("owner", "group"):
        value = getattr(conf, key)
        if value is not None and not 0 <= value <= UINT32_MAX:
            raise config_error(f"invalid {key} {value}: must be a uid/gid in [0, {UINT32_MAX}]")
    if conf.mtu < 0:
        raise config_error(f"invalid MTU {conf.mtu}: must not be negative")
    runtime_mac = conf.runtimeConfig.mac if conf.runtimeConfig is not None else ""
    conf.mac = macaddr.requested_mac(call, conf.mac, runtime_mac)
    return conf


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    result = Result(call.cni_version)
    kind = ipam.type_of(conf)
    with Rollback() as undo:
        created = tapdev.create_tap(
            call.netns,
            call.ifname,
            mtu=conf.mtu,
            mac=conf.mac,
            multi_queue=conf.multiQueue,
            owner=conf.owner,
            group=conf.group,
            selinux_context=conf.selinuxContext,
            bridge=conf.bridge,
        )
        undo.push(links.delete, call.netns, call.ifname)
        result.add_interface(**created)
        if kind:
            allocated = ipam.allocate(call, kind, undo)
            result.ips = [dict(ip, interface=0) for ip in allocated.ips]
            result.routes = allocated.routes
            links.notify_neighbours(call.netns, call.ifname, ipv6=False)
            iface.configure(call.netns, call.ifname, result)
    # The config's dns replaces the IPAM's, even when empty (upstream does the same).
    result.dns = parse_dns(vars(conf.dns)) if conf.dns is not None else {}
    return result


def delete(call: skel.Call) -> None:
    conf = call.load(TapConf)
    ipam.release_then(call, conf, links.delete, call.netns, call.ifname)


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    kind = ipam.type_of(conf)
    if kind:
        ipam.check(call, kind)
    previous = call.prev_result()
    if previous is None:
        raise CNIError(INTERNAL, "Required prevResult missing")
    entry = linkcheck.container_interface(previous, call.ifname, call.netns)
    linkcheck.check_interface(call.netns, entry, "tun")
    linkcheck.check_addresses(call.netns, call.ifname, previous)
    linkcheck.check_routes(call.netns, previous.routes)


def status(call: skel.Call) -> None:
    ipam.forward(call, call.load(TapConf), "STATUS")


def gc(call: skel.Call) -> None:
    # Links die with their netns; only the IPAM has state to collect.
    ipam.forward(call, call.load(TapConf), "GC")


PLUGIN = skel.Plugin("tap", add=add, delete=delete, check=check, status=status, gc=gc)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
