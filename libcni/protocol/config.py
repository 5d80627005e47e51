"""Decoding plugin configs with Go's encoding/json rules: accept and refuse what upstream does.

A config is a class whose annotated attributes are the upstream JSON keys, with defaults:

    class BridgeConf(config.NetConf):
        bridge: str = "cni0"
        mtu: int = 0
        isGateway: bool = False

Rules copied from Go (see FEATURES.md 1.0.1): keys match case-insensitively (an exact match
wins), unknown keys are ignored, a wrong JSON type is fatal, `null` keeps the default, numbers
with a fraction never go into int fields. No dataclasses: they cost ~13 ms of imports per call.
"""

from typing import TYPE_CHECKING

from libcni.protocol.errors import DECODING_FAILURE, INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.version import json_kind


class _Ranged(int):
    """An int field the kernel stores in a fixed width: out of range is a decode error."""

    low = 0
    high = 0


class _Checked(str):
    """A str field with a further rule (`check` returns what is wrong, or "")."""

    expected = ""

    @staticmethod
    def check(value: str) -> str:
        return ""


def _ranged(name: str, low: int, high: int) -> type:
    return type(name, (_Ranged,), {"low": low, "high": high})


def _no_nul(value: str) -> str:
    return "a NUL character" if "\x00" in value else ""


def _link_name(value: str) -> str:
    if "\x00" in value or "/" in value or any(c.isspace() for c in value):
        return "NUL, / or whitespace"
    if len(value.encode(errors="surrogatepass")) > 15:
        return "longer than 15 bytes"
    return ""


def _ip_or_empty(value: str) -> str:
    if not value:
        return ""
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "not an IP address"
    return ""


def _checked(name: str, expected: str, check) -> type:
    return type(name, (_Checked,), {"expected": expected, "check": staticmethod(check)})


# Field types with kernel ranges and string rules. mypy sees plain int/str; the decoder sees
# the checked classes (annotations are evaluated at class creation).
if TYPE_CHECKING:
    Uint8 = int
    Uint16 = int
    Uint32 = int
    Uint64 = int
    Int64 = int
    Int32 = int
    MTU = int
    ID = int
    Path = str
    IP = str
    LinkName = str
else:
    Uint8 = _ranged("Uint8", 0, 2**8 - 1)
    Uint16 = _ranged("Uint16", 0, 2**16 - 1)
    Uint32 = _ranged("Uint32", 0, 2**32 - 1)
    Uint64 = _ranged("Uint64", 0, 2**64 - 1)
    Int32 = _ranged("Int32", -(2**31), 2**31 - 1)
    Int64 = _ranged("Int64", -(2**63), 2**63 - 1)
    MTU = _ranged("MTU", 0, 2**31 - 1)  # dev->mtu is an unsigned int the kernel caps at INT_MAX
    ID = _ranged("ID", 0, 2**32 - 2)  # a uid or gid (uid_t; -1 means "none")
    Path = _checked("Path", "a path without NUL characters", _no_nul)
    IP = _checked("IP", "an IP address", _ip_or_empty)
    LinkName = _checked("LinkName", "a network interface name", _link_name)

_TYPE_WORDS = {
    int: "an integer",
    bool: "true or false",
    str: "a string",
    float: "a number",
    dict: "an object",
    list: "a list",
}


class Struct:
    """Base for decoded config objects: attributes are filled by `decode`."""

    def __init__(self, **values):
        for name, default in _defaults(type(self)).items():
            setattr(self, name, values.get(name, _fresh(default)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in _fields(type(self)))
        return f"{type(self).__name__}({fields})"


def _fresh(default):
    # Mutable defaults are copied so two configs never share a list.
    if isinstance(default, (list, dict)):
        return type(default)(default)
    return default


def _fields(cls) -> dict:
    cached = cls.__dict__.get("_pycni_fields")
    if cached is None:
        cached = {}
        for klass in reversed(cls.__mro__):
            cached.update(klass.__dict__.get("__annotations__", {}))
        cached.pop("_pycni_fields", None)
        cls._pycni_fields = cached
    return cached


def _defaults(cls) -> dict:
    return {name: getattr(cls, name, None) for name in _fields(cls)}


class DecodeError(Exception):
    pass


def _type_error(path: str, expected, value) -> DecodeError:
    word = _TYPE_WORDS.get(expected, getattr(expected, "__name__", str(expected)))
    return DecodeError(f'"{path}" must be {word}, got {json_kind(value)} {_show(value)}')


def _show(value) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _zero(kind):
    """Go's zero value for a null inside a list or map (a null field keeps its default)."""
    if isinstance(kind, type) and issubclass(kind, Struct):
        return kind()
    for base in (bool, int, float, str):
        if isinstance(kind, type) and issubclass(kind, base):
            return base()
    return None


def _decode_value(kind, value, path: str):
    if value is None:
        return None
    origin = getattr(kind, "__origin__", None)
    if isinstance(kind, type) and issubclass(kind, _Ranged):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, int, value)
        if not kind.low <= value <= kind.high:
            raise DecodeError(
                f'"{path}" must be an integer from {kind.low} to {kind.high}, got {value}'
            )
        return value
    if isinstance(kind, type) and issubclass(kind, _Checked):
        if not isinstance(value, str):
            raise _type_error(path, str, value)
        wrong = kind.check(value)
        if wrong:
            raise DecodeError(f'"{path}" must be {kind.expected}, got {_show(value)} ({wrong})')
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise _type_error(path, bool, value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, int, value)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(path, float, value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise _type_error(path, str, value)
        return value
    container = next((c for c in (dict, list) if kind is c or origin is c), None)
    if container is not None:
        if not isinstance(value, container):
            raise _type_error(path, container, value)
        args = getattr(kind, "__args__", None)
        if not args:
            return value
        if container is dict:
            return {k: _item(args[1], v, f"{path}.{k}") for k, v in value.items()}
        return [_item(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, type) and issubclass(kind, Struct):
        if not isinstance(value, dict):
            raise _type_error(path, dict, value)
        return _decode_struct(kind, value, path + ".")
    # `X | None`: decode as X.
    members = getattr(kind, "__args__", None)
    if members:
        real = [m for m in members if m is not type(None)]
        return _decode_value(real[0], value, path)
    return value  # untyped (object): anything goes


def _item(kind, value, path: str):
    decoded = _decode_value(kind, value, path)
    return _zero(kind) if decoded is None else decoded


def _decode_struct(cls, obj: dict, prefix: str = ""):
    fields = _fields(cls)
    instance = cls()
    lowered: dict = {}
    for key in obj:
        lowered.setdefault(key.lower(), key)
    for name, kind in fields.items():
        key = name if name in obj else lowered.get(name.lower())
        if key is None:
            continue
        value = _decode_value(kind, obj[key], prefix + name)
        if value is not None:
            setattr(instance, name, value)
    return instance


def decode(cls, obj, what: str = "netconf"):
    """Decode `obj` (parsed JSON) into `cls`; a wrong type is code 7 naming the key."""
    if not isinstance(obj, dict):
        raise CNIError(DECODING_FAILURE, f"failed to load {what}: expected a JSON object")
    try:
        return _decode_struct(cls, obj)
    except DecodeError as err:
        raise CNIError(INVALID_NETWORK_CONFIG, f"failed to load {what}: {err}") from None


def check_json(obj, raw: bytes, max_depth: int):
    """`obj` (decoded from `raw`) with nesting at most `max_depth` (else code 6) and every lone
    surrogate (a `\\ud800` escape) replaced by U+FFFD, as Go's decoder does, so no string a
    plugin sees can fail to encode. Walks the tree only when `raw` says it may need it."""
    import re

    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    surrogates = re.search(rb"\\u[dD][89abcdefABCDEF]", raw) is not None
    if not deep and not surrogates:
        return obj
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise CNIError(
                DECODING_FAILURE,
                f"error unmarshall network config: JSON nested deeper than {max_depth} levels",
            )
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if surrogates and isinstance(value, str):
                    node[key] = _no_surrogates(value)
                elif isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                if surrogates and isinstance(key, str) and _no_surrogates(key) != key:
                    node[_no_surrogates(key)] = node.pop(key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if surrogates and isinstance(value, str):
                    node[i] = _no_surrogates(value)
                elif isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
    return obj


def _no_surrogates(text: str) -> str:
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


class IPAMConf(Struct):
    type: str = ""


class DNSConf(Struct):
    nameservers: list[str] = []
    domain: str = ""
    search: list[str] = []
    options: list[str] = []


class CniIpsArgs(Struct):
    ips: list[str] = []


class IpsArgs(Struct):
    """`args` as runtimes fill it for IPAM plugins: `{"cni": {"ips": [...]}}` (host-local and
    static take requested addresses from it)."""

    cni: CniIpsArgs = None  # type: ignore[assignment]


class NetConf(Struct):
    """The keys every plugin config may carry (Go's types.NetConf)."""

    cniVersion: str = ""
    name: str = ""
    type: str = ""
    capabilities: dict[str, bool] = {}
    ipam: IPAMConf = None  # type: ignore[assignment]
    dns: DNSConf = None  # type: ignore[assignment]
    args: dict = {}
    runtimeConfig: dict = {}
    prevResult: dict = None  # type: ignore[assignment]


def dns_if_set(conf) -> dict | None:
    """The config's `dns` when any field is set (bridge and ptp then replace the IPAM's)."""
    dns = conf.dns
    if dns is None or not (dns.nameservers or dns.search or dns.options or dns.domain):
        return None
    return {
        "nameservers": dns.nameservers,
        "domain": dns.domain,
        "search": dns.search,
        "options": dns.options,
    }


def config_dns(conf) -> dict:
    """The result's dns from the config's `dns`, replacing the IPAM's even when it is empty, as
    upstream's macvlan, ipvlan, vlan, tap and host-device do."""
    if conf.dns is None:
        return {}
    from libcni.protocol.result import parse_dns

    return parse_dns(vars(conf.dns))
