"""DHCP options: the config's `request`/`provide` lists, the client-id, and the CNI result a
DHCPACK's options make. Plain Python, no pyroute2: the plugin uses the first half on every call,
the daemon the second (it gets option values as pyroute2 decodes them: names and byte lists).
"""

import ipaddress

from libcni.protocol.errors import INVALID_NETWORK_CONFIG, CNIError

# Upstream's option names (dhcp-options(5) spelling); any other option is its decimal code.
OPTION_NAMES = {
    "dhcp-client-identifier": 61,
    "subnet-mask": 1,
    "routers": 3,
    "host-name": 12,
    "user-class": 77,
    "vendor-class-identifier": 60,
}
SUBNET_MASK, ROUTER, DNS_SERVERS, DOMAIN_NAME, STATIC_ROUTES = 1, 3, 6, 15, 33
CLIENT_ID, DOMAIN_SEARCH, CLASSLESS_ROUTES = 61, 119, 121
# Upstream requests routers and subnet mask; we also ask for what the result carries beyond
# them (DNS servers, domain, search list, static and classless routes). skipDefault drops all.
DEFAULT_REQUEST = (
    SUBNET_MASK,
    ROUTER,
    DNS_SERVERS,
    DOMAIN_NAME,
    DOMAIN_SEARCH,
    CLASSLESS_ROUTES,
    STATIC_ROUTES,
)
MAX_CLIENT_ID = 254
MAX_VALUE = 255
SCOPE_LINK = 253


def parse_option_name(text: str) -> int:
    code = OPTION_NAMES.get(text)
    if code is not None:
        return code
    if text.isdigit() and int(text) <= 255:
        return int(text)
    raise CNIError(
        INVALID_NETWORK_CONFIG,
        f'Can not parse option "{text}"',
        "an option is one of " + ", ".join(sorted(OPTION_NAMES)) + " or a decimal code 0-255",
    )


def client_id(container_id: str, network: str, ifname: str) -> str:
    """Upstream's key and client identifier text: sent as option 61 with a 0x00 type byte.

    Option 61 holds at most 254 bytes. Upstream cuts longer keys there, so two attachments
    whose IDs share the first 254 bytes would share one lease; we keep 237 bytes and add `~`
    and 16 hex digits of the whole key's SHA-256, so every legal container ID, network and
    interface name gets its own identifier (and lease file: store.py names it by a hash).
    Keys of up to 254 bytes are upstream's, byte for byte."""
    full = f"{container_id}/{network}/{ifname}"
    raw = full.encode()
    if len(raw) <= MAX_CLIENT_ID:
        return full
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = raw[: MAX_CLIENT_ID - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def requested(ipam) -> list:
    """The Parameter Request List (option 55) for the config's `request` entries."""
    codes: list = []
    skip_default = False
    for entry in ipam.request:
        skip_default = skip_default or entry.skipDefault
        if entry.option:
            code = parse_option_name(entry.option)
            if code not in codes:
                codes.append(code)
    if not skip_default:
        codes += [code for code in DEFAULT_REQUEST if code not in codes]
    return codes


def _cni_args_lenient(raw: str) -> dict:
    # Upstream splits CNI_ARGS here on ';' then on the first '=', and ignores what does not fit.
    found = {}
    for pair in raw.split(";"):
        key, sep, value = pair.partition("=")
        if sep:
            found[key] = value
    return found


def provided(ipam, cni_args: str) -> dict:
    """{code: value bytes as hex} for the config's `provide` entries (a later entry wins)."""
    args = _cni_args_lenient(cni_args)
    out: dict = {}
    for entry in ipam.provide:
        code = parse_option_name(entry.option)
        if entry.value:
            if len(entry.value.encode()) > MAX_VALUE:
                raise CNIError(
                    INVALID_NETWORK_CONFIG,
                    f'value too long for option "{entry.option}": "{entry.value}"',
                    f"a DHCP option value holds at most {MAX_VALUE} bytes",
                )
            out[str(code)] = entry.value.encode().hex()
        if entry.fromArg:
            value = args.get(entry.fromArg, "")
            if len(value.encode()) > MAX_VALUE:
                raise CNIError(
                    INVALID_NETWORK_CONFIG,
                    f'value too long for option "{entry.option}" from CNI_ARGS '
                    f'"{entry.fromArg}": "{value}"',
                )
            if value:
                out[str(code)] = value.encode().hex()
    return out


# -- the result of a lease (daemon side) ------------------------------------------------------


def _ip(raw: list) -> str:
    return str(ipaddress.IPv4Address(bytes(raw)))


def classless_routes(raw: list) -> list:
    """Option 121 (RFC 3442): [(dst CIDR, gateway)] from its byte list; stops at a bad entry."""
    routes, i = [], 0
    while i < len(raw):
        width = raw[i]
        size = (width + 7) // 8
        if width > 32 or i + 1 + size + 4 > len(raw):
            break
        prefix = bytes(raw[i + 1 : i + 1 + size]) + b"\0" * (4 - size)
        gateway = _ip(raw[i + 1 + size : i + 5 + size])
        network = ipaddress.IPv4Network((prefix, width), strict=False)
        routes.append((str(network), gateway))
        i += 5 + size
    return routes


def static_routes(raw: list) -> list:
    """Option 33: classful destinations (the mask is the address class's) with routers."""
    routes = []
    for i in range(0, len(raw) - 7, 8):
        dst = ipaddress.IPv4Address(bytes(raw[i : i + 4]))
        first = raw[i]
        width = 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else 32
        network = ipaddress.IPv4Network((int(dst), width), strict=False)
        routes.append((str(network), _ip(raw[i + 4 : i + 8])))
    return routes


def domain_list(raw: list) -> list:
    """Option 119 (RFC 3397): DNS names in wire format, with compression pointers."""
    data = bytes(raw)
    names: list = []
    offset = 0
    while offset < len(data):
        labels: list = []
        at, jumps, end = offset, 0, None
        while at < len(data) and jumps < 64:
            length = data[at]
            if length == 0:
                at += 1
                break
            if length & 0xC0 == 0xC0:
                if at + 1 >= len(data):
                    return names
                end = at + 2 if end is None else end
                at, jumps = ((length & 0x3F) << 8) | data[at + 1], jumps + 1
                continue
            labels.append(data[at + 1 : at + 1 + length].decode("ascii", "replace"))
            at += 1 + length
        offset = end if end is not None else at
        if labels:
            names.append(".".join(labels))
    return names


def _as_list(value) -> list:
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else []


def result_from_ack(yiaddr: str, options: dict, priority: int = 0) -> dict:
    """The CNI result (1.1.0 shape) of a lease: address, gateway, routes, DNS."""
    mask = options.get("subnet_mask")
    if not mask:
        raise CNIError(999, "DHCP option Subnet Mask not found in DHCPACK")
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    routers = _as_list(options.get("router"))
    ip: dict = {"address": f"{yiaddr}/{prefix}"}
    if routers:
        ip["gateway"] = routers[0]
    routes: list = []
    if options.get("classless_static_route"):
        # RFC 3442: with option 121 the client ignores option 33 and the routers for routes.
        for dst, gateway in classless_routes(options["classless_static_route"]):
            route = {"dst": dst, "gw": gateway}
            if gateway == "0.0.0.0":  # on-link: as upstream, gw 0.0.0.0 with scope link
                route["scope"] = SCOPE_LINK
            routes.append(route)
    else:
        for dst, gateway in static_routes(options.get("static_route") or []):
            routes.append({"dst": dst, "gw": gateway})
        if routers:
            routes.append({"dst": "0.0.0.0/0", "gw": routers[0]})
    if priority:
        for route in routes:
            route["priority"] = priority
    dns: dict = {}
    if options.get("name_server"):
        dns["nameservers"] = _as_list(options["name_server"])
    if isinstance(options.get("domain_name"), str) and options["domain_name"]:
        dns["domain"] = options["domain_name"]
    if options.get("domain_search"):
        dns["search"] = domain_list(options["domain_search"])
    return {"ips": [ip], "routes": routes, "dns": dns}
