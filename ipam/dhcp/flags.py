"""`dhcp daemon`'s command line: upstream's flags in Go's flag syntax (`-name value`,
`-name=value`, `--name`) and Go's duration strings, plus ours (-statedir)."""

import re

from ipam.dhcp import rpc
from ipam.dhcp.store import DEFAULT_DIR

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
FLAGS = {  # name: (default, kind, help)
    "pidfile": ("", str, "optional path to write daemon PID to"),
    "hostprefix": ("", str, "optional prefix to host root"),
    "socketpath": (rpc.DEFAULT_SOCKET, str, "dhcp daemon socket path"),
    "statedir": (DEFAULT_DIR, str, "directory of the persisted leases"),
    "broadcast": (False, bool, "broadcast DHCP leases"),
    "timeout": (10.0, float, "dhcp client timeout duration for each request"),
    "resendmax": (62.0, float, "dhcp client max resend delay between requests"),
    "resendtimeout": (208.0, float, "dhcp client resend timeout, no more retries after it"),
}


class UsageError(Exception):
    pass


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the forms people write: 10s, 1m30s, 500ms, 1.5h, 0."""
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f'invalid duration "{text}"')
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def parse_flags(argv: list) -> dict:
    values = {name: default for name, (default, _, _) in FLAGS.items()}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg in ("-", "--"):
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise UsageError("")
        if name not in FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        kind = FLAGS[name][1]
        if kind is bool:
            if has_value and value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise UsageError(f'invalid boolean value "{value}" for -{name}')
            values[name] = not has_value or value.lower() in ("1", "t", "true")
        else:
            if not has_value:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            values[name] = parse_duration(value) if kind is float else value
        i += 1
    return values


def usage() -> str:
    lines = ["Usage of daemon:"]
    for name, (default, kind, text) in FLAGS.items():
        lines.append(f"  -{name}" + ("" if kind is bool else " value"))
        lines.append(f"    \t{text} (default {default!r})")
    return "\n".join(lines)
