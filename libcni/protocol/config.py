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

from libcni.protocol.errors import DECODING_FAILURE, INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.version import json_kind

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


def _decode_value(kind, value, path: str):
    if value is None:
        return None
    origin = getattr(kind, "__origin__", None)
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
            return {k: _decode_value(args[1], v, f"{path}.{k}") for k, v in value.items()}
        return [_decode_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
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


class IPAMConf(Struct):
    type: str = ""


class DNSConf(Struct):
    nameservers: list[str] = []
    domain: str = ""
    search: list[str] = []
    options: list[str] = []


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
    return {"nameservers": dns.nameservers, "domain": dns.domain, "search": dns.search,
            "options": dns.options}  # fmt: skip


def config_dns(conf) -> dict:
    """The result's dns from the config's `dns`, replacing the IPAM's even when it is empty, as
    upstream's macvlan, ipvlan, vlan, tap and host-device do."""
    if conf.dns is None:
        return {}
    from libcni.protocol.result import parse_dns

    return parse_dns(vars(conf.dns))
