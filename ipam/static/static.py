"""static: hand out exactly the addresses the config (or the runtime) names. No state on disk.

Sources, each later one replacing the earlier: the config's `addresses` plus CNI_ARGS `IP=`
(with `GATEWAY=`), then `args.cni.ips`, then runtimeConfig `ips` (capability "ips").
"""

import ipaddress

from libcni.protocol import config, skel
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.result import Result, parse_dns, parse_route


class Address(config.Struct):
    address: str = ""
    gateway: str = ""


class IPAMConf(config.Struct):
    type: str = ""
    addresses: list[Address] = []
    routes: list = []
    dns: dict = {}


class RuntimeConfig(config.Struct):
    ips: list[str] = []


class Conf(config.NetConf):
    ipam: IPAMConf = None  # type: ignore[assignment]
    args: config.IpsArgs = None  # type: ignore[assignment]
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def _cidr(text: str, what: str):
    if "/" not in text:
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f"an entry in the '{what}' field is NOT in CIDR notation, got: '{text}'",
        )
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise CNIError(INVALID_NETWORK_CONFIG, f"invalid CIDR address: {text}") from None


def _gateway(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise CNIError(INVALID_NETWORK_CONFIG, f'invalid gateway "{text}"') from None


def addresses(call: skel.Call, conf: Conf) -> list:
    """[(interface address, gateway or None)] after applying every source in order."""
    found = [
        (_cidr(a.address, "addresses"), _gateway(a.gateway) if a.gateway else None)
        for a in conf.ipam.addresses
    ]
    args = call.cni_args("IP", "GATEWAY")
    if args.get("IP"):
        found += [(_cidr(text, "IP"), None) for text in args["IP"].split(",")]
        for gateway in (_gateway(t) for t in args.get("GATEWAY", "").split(",") if t):
            found = [(ip, gateway if gateway in ip.network else gw) for ip, gw in found]
    cni_ips = conf.args.cni.ips if conf.args is not None and conf.args.cni is not None else []
    if cni_ips:
        found = [(_cidr(text, "ips"), None) for text in cni_ips]
    runtime_ips = conf.runtimeConfig.ips if conf.runtimeConfig is not None else []
    if runtime_ips:
        found = [(_cidr(text, "ips"), None) for text in runtime_ips]
    if call.cni_version in ("", "0.1.0", "0.2.0"):
        for version in (4, 6):
            if sum(1 for ip, _ in found if ip.version == version) > 1:
                raise CNIError(
                    INVALID_NETWORK_CONFIG,
                    f"CNI version {call.cni_version} does "
                    "not support more than 1 address per family",
                )
    return found


def _load(call: skel.Call) -> Conf:
    conf = call.load(Conf)
    if conf.ipam is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "IPAM config missing 'ipam' key")
    return conf


def add(call: skel.Call) -> Result:
    conf = _load(call)
    result = Result(call.cni_version)
    for ip, gateway in addresses(call, conf):
        result.add_ip(str(ip), str(gateway) if gateway else None)
    result.routes = [parse_route(r) for r in conf.ipam.routes]
    result.dns = parse_dns(conf.ipam.dns)
    return result


def check(call: skel.Call) -> None:
    conf = _load(call)
    previous = call.prev_result()
    if previous is None:
        raise CNIError(INTERNAL, "Required prevResult missing")
    given = {entry["address"]: entry.get("gateway") for entry in previous.ips}
    for ip, gateway in addresses(call, conf):
        text = f"{ip.ip}/{ip.network.prefixlen}"
        if text in given and (given[text] or None) != (str(gateway) if gateway else None):
            raise CNIError(
                INTERNAL, f"static: Failed to match addr {text} on interface {call.ifname}"
            )


def delete(call: skel.Call) -> None:
    _load(call)  # nothing was stored; only refuse a broken config, as upstream does


PLUGIN = skel.Plugin("static", add=add, delete=delete, check=check)
