"""CNI results for every spec version, and the conversions between the three result families.

A `Result` holds one canonical form (the 1.1.0 shape, as plain dicts with the spec's key names)
and prints itself in any version's shape:

* family A (0.1.0, 0.2.0): `ip4`/`ip6` objects, routes nested under them;
* family B (0.3.0, 0.3.1, 0.4.0): `interfaces`, `ips` with `version`, `routes`, `dns`;
* family C (1.0.0, 1.1.0): like B without `ips[].version`; interfaces may carry mtu,
  socketPath, pciID.

Printing copies Go's encoder: 4-space indent, no trailing newline; A and B keep struct field
order and always print `dns`; C prints keys alphabetically and omits an empty `dns`.
"""

import ipaddress

from libcni.protocol import version as versions
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.protocol.gojson import indent

INTERFACE_KEYS_B = ("name", "mac", "sandbox")
INTERFACE_KEYS_C = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
ROUTE_KEYS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
# Route fields Go stores as pointers: printed even when 0, once set.
ROUTE_POINTER_KEYS = ("table", "scope")
DNS_KEYS = ("nameservers", "domain", "search", "options")


def _fail(msg: str) -> CNIError:
    return CNIError(INTERNAL, msg)


def _cidr(text, what: str) -> str:
    """An address with prefix, host bits kept (Go's types.IPNet), normalised to canonical text."""
    if not isinstance(text, str):
        raise _fail(f"invalid {what}: expected a string like 10.1.0.5/24, got {text!r}")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise _fail(f'invalid {what} "{text}": not an address in CIDR notation') from None
    if "/" not in text:
        raise _fail(f'invalid {what} "{text}": not an address in CIDR notation')
    return f"{iface.ip}/{iface.network.prefixlen}"


def _ip(text, what: str) -> str:
    if not isinstance(text, str):
        raise _fail(f"invalid {what}: expected an IP address string, got {text!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _fail(f'invalid {what} "{text}": not an IP address') from None


def ip_version(cidr_or_ip: str) -> int:
    return ipaddress.ip_interface(cidr_or_ip).version


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"invalid {what}: expected an integer, got {value!r}")
    return value


def _str_list(value, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"invalid {what}: expected a list of strings, got {value!r}")
    return list(value)


def _list(obj: dict, key: str, what: str) -> list:
    """`obj[key]` as a list ([] when missing or null), or a CNIError naming the key."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(f"invalid {what}: expected a list, got {_kind(value)}")
    return value


def _str(value, what: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"invalid {what}: expected a string, got {_kind(value)}")
    return value


def _kind(value) -> str:
    from libcni.protocol.version import json_kind

    text = repr(value)
    return f"{json_kind(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def parse_route(obj) -> dict:
    if not isinstance(obj, dict):
        raise _fail(f"invalid route: expected an object, got {obj!r}")
    route: dict = {"dst": _cidr(obj.get("dst"), "route dst")}
    if obj.get("gw"):
        route["gw"] = _ip(obj["gw"], "route gw")
    for key in ("mtu", "advmss", "priority", "table", "scope"):
        if obj.get(key) is not None:
            route[key] = _int(obj[key], f"route {key}")
    return route


def parse_dns(obj) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise _fail(f"invalid dns: expected an object, got {obj!r}")
    dns: dict = {}
    for key in ("nameservers", "search", "options"):
        values = _str_list(obj.get(key), f"dns {key}")
        if values:
            dns[key] = values
    domain = obj.get("domain")
    if domain:
        if not isinstance(domain, str):
            raise _fail(f"invalid dns domain: expected a string, got {domain!r}")
        dns["domain"] = domain
    return dns


def _dns_out(dns: dict) -> dict:
    return {key: dns[key] for key in DNS_KEYS if dns.get(key)}


def _route_out(route: dict, keys=ROUTE_KEYS) -> dict:
    out = {}
    for key in keys:
        value = route.get(key)
        if value is None:
            continue
        if not value and key not in ROUTE_POINTER_KEYS:
            continue
        out[key] = value
    return out


class Result:
    """One result in canonical form; `cni_version` is the version it was made or read as."""

    def __init__(
        self, cni_version: str = versions.CURRENT, interfaces=None, ips=None, routes=None, dns=None
    ):
        self.cni_version = cni_version
        self.interfaces: list = interfaces if interfaces is not None else []
        self.ips: list = ips if ips is not None else []
        self.routes: list = routes if routes is not None else []
        self.dns: dict = dns if dns is not None else {}

    # -- building ------------------------------------------------------------------------

    def add_interface(self, name: str, mac: str = "", sandbox: str = "", **extra) -> int:
        """Append an interface and return its index (what `ips[].interface` points at)."""
        entry = {"name": name}
        if mac:
            entry["mac"] = mac
        if sandbox:
            entry["sandbox"] = sandbox
        entry.update({k: v for k, v in extra.items() if v})
        self.interfaces.append(entry)
        return len(self.interfaces) - 1

    def add_ip(self, address, gateway: str | None = None, interface: int | None = None):
        entry: dict = {"address": _cidr(address, "address")}
        if gateway:
            entry["gateway"] = _ip(gateway, "gateway")
        if interface is not None:
            entry["interface"] = interface
        self.ips.append(entry)

    def copy(self) -> "Result":
        return Result(
            self.cni_version,
            [dict(i) for i in self.interfaces],
            [dict(i) for i in self.ips],
            [dict(r) for r in self.routes],
            {k: list(v) if isinstance(v, list) else v for k, v in self.dns.items()},
        )

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj, config_version: str) -> "Result":
        """Decode a result the way Go's decoder for `config_version`'s family does.

        A missing `cniVersion` is taken to be `config_version`; a result whose version belongs
        to another family is refused with upstream's message.
        """
        if not isinstance(obj, dict):
            raise _fail(f"invalid result: expected a JSON object, got {type(obj).__name__}")
        declared = obj.get("cniVersion") or config_version
        try:
            family = versions.family(config_version)
        except ValueError:
            raise _fail(f'unsupported CNI result version "{config_version}"') from None
        if declared not in family:
            supported = "[" + " ".join(family) + "]"
            raise _fail(
                f'result type supports {supported} but unmarshalled CNIVersion is "{declared}"'
            )
        if family is versions.FAMILY_A:
            result = cls._from_family_a(obj)
        else:
            result = cls._from_family_bc(obj)
        result.cni_version = declared
        return result

    @classmethod
    def _from_family_a(cls, obj: dict) -> "Result":
        result = cls()
        for key in ("ip4", "ip6"):
            block = obj.get(key)
            if block is None:
                continue
            if not isinstance(block, dict):
                raise _fail(f"invalid {key}: expected an object")
            result.add_ip(block.get("ip"), block.get("gateway") or None)
            for route in _list(block, "routes", f"{key} routes"):
                result.routes.append(parse_route(route))
        result.dns = parse_dns(obj.get("dns"))
        return result

    @classmethod
    def _from_family_bc(cls, obj: dict) -> "Result":
        result = cls()
        for entry in _list(obj, "interfaces", "interfaces"):
            if not isinstance(entry, dict) or not isinstance(entry.get("name", ""), str):
                raise _fail(f"invalid interface entry: expected an object, got {_kind(entry)}")
            iface = {"name": entry.get("name") or ""}
            for key in ("mac", "sandbox", "socketPath", "pciID"):
                if entry.get(key):
                    iface[key] = _str(entry[key], f"interface {key}")
            if entry.get("mtu"):
                iface["mtu"] = _int(entry["mtu"], "interface mtu")
            result.interfaces.append(iface)
        for entry in _list(obj, "ips", "ips"):
            if not isinstance(entry, dict):
                raise _fail(f"invalid ips entry: expected an object, got {_kind(entry)}")
            index = entry.get("interface")
            if index is not None:
                index = _int(index, "ips interface index")
            result.add_ip(entry.get("address"), entry.get("gateway") or None, index)
        for route in _list(obj, "routes", "routes"):
            result.routes.append(parse_route(route))
        result.dns = parse_dns(obj.get("dns"))
        return result

    # -- printing ------------------------------------------------------------------------

    def to_version(self, target: str) -> dict:
        """This result as a JSON-ready dict in `target`'s shape (key order as Go prints it)."""
        family = versions.family(target)
        if family is versions.FAMILY_A:
            return self._to_family_a(target)
        if family is versions.FAMILY_B:
            return self._to_family_b(target)
        return self._to_family_c(target)

    def dumps(self, target: str | None = None) -> str:
        target = target or self.cni_version
        sort = versions.family(target) is versions.FAMILY_C
        return indent(self.to_version(target), sort_keys=sort)

    def _to_family_a(self, target: str) -> dict:
        out: dict = {"cniVersion": target}
        blocks: dict = {}
        for entry in self.ips:
            key = "ip4" if ip_version(entry["address"]) == 4 else "ip6"
            if key in blocks:
                continue
            block = {"ip": entry["address"]}
            if entry.get("gateway"):
                block["gateway"] = entry["gateway"]
            blocks[key] = block
        if not blocks:
            raise _fail("cannot convert: no valid IP addresses")
        for route in self.routes:
            key = "ip4" if ip_version(route["dst"]) == 4 else "ip6"
            if key in blocks:
                blocks[key].setdefault("routes", []).append(_route_out(route, ("dst", "gw")))
        for key in ("ip4", "ip6"):
            if key in blocks:
                out[key] = blocks[key]
        out["dns"] = _dns_out(self.dns)
        return out

    def _to_family_b(self, target: str) -> dict:
        # 0.3.x/0.4.0: each IP names its version; dns is printed even when empty.
        return self._to_ips_shape(target, INTERFACE_KEYS_B, ip_versions=True, empty_dns=True)

    def _to_family_c(self, target: str) -> dict:
        return self._to_ips_shape(target, INTERFACE_KEYS_C, ip_versions=False, empty_dns=False)

    def _to_ips_shape(
        self, target: str, interface_keys: tuple, ip_versions: bool, empty_dns: bool
    ) -> dict:
        out: dict = {"cniVersion": target}
        if self.interfaces:
            out["interfaces"] = [
                {k: i[k] for k in interface_keys if i.get(k) or k == "name"}
                for i in self.interfaces
            ]
        if self.ips:
            out["ips"] = []
            for entry in self.ips:
                ip: dict = {"version": str(ip_version(entry["address"]))} if ip_versions else {}
                if entry.get("interface") is not None:
                    ip["interface"] = entry["interface"]
                ip["address"] = entry["address"]
                if entry.get("gateway"):
                    ip["gateway"] = entry["gateway"]
                out["ips"].append(ip)
        if self.routes:
            out["routes"] = [_route_out(r) for r in self.routes]
        dns = _dns_out(self.dns)
        if dns or empty_dns:
            out["dns"] = dns
        return out


def convert(obj: dict, to_version: str) -> dict:
    """Convert a result dict of any version (it names its own) to another version's shape."""
    own = obj.get("cniVersion") or to_version
    return Result.from_json(obj, own).to_version(to_version)
