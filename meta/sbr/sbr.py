"""sbr: source-based routing, chained after a main plugin. Each IP of the container interface
gets a rule `from <ip> lookup <table>` and its own table (the first free one from 100) holding
the interface's routes, which leave main. With `table`, only the rules are added, into it.
"""

import ipaddress

from libcni.kernel import netns
from libcni.protocol import skel
from libcni.protocol.config import NetConf
from libcni.protocol.errors import config_error, internal
from libcni.protocol.result import Result
from libcni.rollback import Rollback
from meta.sbr import routing

MAX_TABLE = 2**32 - 1


class SbrConf(NetConf):
    table: int | None = None
    gateways: list[str] = []
    addSourceHints: bool = False


def load_conf(call: skel.Call) -> tuple:
    """(config, {4: gateway, 6: gateway}) with upstream's checks, made before any change."""
    conf = call.load(SbrConf)
    if conf.table is not None and not 0 < conf.table <= MAX_TABLE:
        raise config_error(
            f"table must be a routing table id from 1 to {MAX_TABLE}, got {conf.table}"
        )
    if len(conf.gateways) > 2:
        raise config_error("gateways list cannot contain more than 2 entries (one IPv4, one IPv6)")
    gateways: dict = {}
    for text in conf.gateways:
        try:
            gateway = ipaddress.ip_address(text)
        except ValueError:
            raise config_error(f"invalid static gateway IP address: {text}") from None
        if gateway.version in gateways:
            family = "IPv4" if gateway.version == 4 else "IPv6"
            raise config_error(
                f"gateways list contains multiple {family} addresses: "
                f"{gateways[gateway.version]} and {text}"
            )
        gateways[gateway.version] = str(gateway)
    return conf, gateways


def interface_ips(result: Result, ifname: str) -> list:
    """The IPs of `ifname` as upstream picks them: an IP with no interface index, or one out
    of range, counts as the interface's."""
    if not result.ips:
        raise internal(f"No IP addresses supplied on interface: {ifname}")
    picked = []
    for ip in result.ips:
        index = ip.get("interface")
        if index is not None and 0 <= index < len(result.interfaces):
            if result.interfaces[index].get("name") != ifname:
                continue
        picked.append(ip)
    return picked


def add(call: skel.Call) -> Result:
    conf, gateways = load_conf(call)
    previous = call.chained_result("This plugin must be called as chained plugin")
    ips = interface_ips(previous, call.ifname)
    with routing.open_session(call.netns) as container, Rollback() as undo:
        if conf.table is not None:
            routing.add_rules_only(container, ips, conf.table, undo)
        else:
            link = routing.require_link(container, call.ifname)
            routing.source_routes(container, link, ips, gateways, conf.addSourceHints, undo)
    return previous


def delete(call: skel.Call) -> None:
    conf, _ = load_conf(call)
    if not call.netns or not netns.exists(call.netns):
        return  # the netns and every rule in it are gone
    try:
        with routing.open_session(call.netns) as container:
            link = container.link(call.ifname)
            if link is not None:  # a missing interface is nothing to do
                routing.tidy(container, link, conf.table)
    except netns.NetnsMissing:
        return


def check(call: skel.Call) -> None:
    conf, _ = load_conf(call)
    previous = call.chained_result("Required prevResult missing")
    ips = interface_ips(previous, call.ifname)
    with routing.open_session(call.netns) as container:
        routing.require_link(container, call.ifname)
        missing = routing.missing_rules(container, ips, conf.table)
    if missing:
        where = f"table {conf.table}" if conf.table is not None else "a table"
        raise internal(
            f"no source rule for {', '.join(missing)} on {call.ifname}",
            f"expected `ip rule` to show 'from <ip> lookup' {where}; was sbr's ADD undone?",
        )


PLUGIN = skel.Plugin("sbr", add=add, delete=delete, check=check)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
