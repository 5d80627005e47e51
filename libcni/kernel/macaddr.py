"""MAC addresses as configs and runtimes give them: parsed, checked, and chosen by precedence."""

from libcni.protocol.errors import INTERNAL, CNIError


def parse_mac(text: str, source: str) -> str:
    """A 6-byte MAC (`aa:bb:..`, `aa-bb-..` or `aabb.ccdd.eeff`) in canonical lower-case form."""
    if "." in text:
        groups, width = text.split("."), 4
        ok = len(groups) == 3
    else:
        groups, width = text.replace("-", ":").split(":"), 2
        ok = len(groups) == 6 and ("-" not in text or ":" not in text)
    ok = ok and all(
        len(g) == width and all(c in "0123456789abcdefABCDEF" for c in g) for g in groups
    )
    if not ok:
        raise CNIError(
            INTERNAL,
            f'invalid MAC address "{text}" in {source}',
            "expected six hex bytes such as 0a:58:0a:f4:00:05",
        )
    digits = "".join(groups).lower()
    mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if int(digits[:2], 16) & 1:
        raise CNIError(
            INTERNAL,
            f'invalid MAC address "{text}" in {source}: it is a multicast address',
            "the lowest bit of the first byte must be 0 for an interface address",
        )
    return mac


def requested_mac(call, conf) -> str:
    """The MAC a container asked for, in upstream's precedence, canonical; "" for none.

    config "mac" < CNI_ARGS MAC < runtimeConfig.mac (capability "mac"); `conf` is a config with
    `mac` and `runtimeConfig` keys (macvlan, tap).
    """
    mac, source = conf.mac, 'config "mac"'
    runtime_mac = conf.runtimeConfig.mac if conf.runtimeConfig is not None else ""
    env_mac = call.cni_args("MAC").get("MAC", "")
    if env_mac:
        mac, source = env_mac, "CNI_ARGS MAC"
    if runtime_mac:
        mac, source = runtime_mac, "runtimeConfig.mac"
    return parse_mac(mac, source) if mac else ""
