"""cnitool's command line: its usage text, its flags, and the parsing of what it is given
(CNI_ARGS, capability arguments, netns names), with upstream cnitool's derived container ID."""

import os

from libcni.protocol import gojson
from libcni.protocol.errors import INVALID_ENVIRONMENT, CNIError

DEFAULT_NETCONFPATH = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin"
NETNS_DIRS = ("/var/run/netns", "/run/netns")
COMMANDS = ("add", "check", "del", "gc", "status", "version")

USAGE = "cnitool [options] {add|check|del|gc|status|version} NETWORK [NETNS] | cnitool doctor"

DESCRIPTION = """\
Attach a network namespace to a CNI network, check it, detach it, or ask the network's
plugins for garbage collection, status and versions.

commands:
  add NETWORK NETNS     run ADD on every plugin of NETWORK in order; print the result
  check NETWORK NETNS   run CHECK with the cached result (cniVersion 0.4.0+)
  del NETWORK NETNS     run DEL on every plugin in reverse order; forget the cached result
  gc NETWORK            delete every cached attachment of NETWORK not named with --valid,
                        then run GC on each plugin (cniVersion 1.1.0+)
  status NETWORK        run STATUS on each plugin (cniVersion 1.1.0+)
  version [NETWORK]     the CNI versions each plugin of NETWORK supports (no NETWORK:
                        cnitool's own)
  doctor [--json]       what keeps this node's pods off the network, and how to fix it
                        (`cnitool doctor --help`)

NETWORK is a network name from the config directory, or a path to a .conflist/.conf/.json
file (anything containing a "/"). NETNS is a netns path, or a name in /var/run/netns."""

EPILOG = """\
environment:
  NETCONFPATH   config directory (default /etc/cni/net.d)
  CNI_PATH      ':'-separated plugin directories (default /opt/cni/bin)
  CNI_IFNAME    interface name when --ifname is not given (default eth0)
  CNI_ARGS      KEY=VALUE;KEY=VALUE passed to plugins as CNI_ARGS
  CAP_ARGS      JSON object of capability arguments (see --capability-args)

The container ID is derived from the netns path (cnitool-<sha512 prefix>), as upstream
cnitool does, so add and del of the same path meet in the cache.
On error the CNI error JSON is printed on stdout, an explanation on stderr; exit status 1."""


def container_id_for(netns_path: str) -> str:
    """Upstream cnitool's container ID: the first 10 bytes of sha512(netns path), in hex."""
    import hashlib

    return "cnitool-" + hashlib.sha512(netns_path.encode()).digest()[:10].hex()


def parse_cni_args(text: str) -> list:
    """CNI_ARGS into [(key, value)]; every piece must be KEY=VALUE with both non-empty."""
    pairs = []
    for piece in text.split(";"):
        parts = piece.split("=")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise CNIError(
                INVALID_ENVIRONMENT,
                f'invalid CNI_ARGS pair "{piece}"',
                'CNI_ARGS must be KEY=VALUE pairs separated by ";" (values cannot contain "=")',
            )
        pairs.append((parts[0], parts[1]))
    return pairs


def parse_capability_args(text: str, source: str) -> dict:
    value = gojson.loads(text, f"{source} is not valid JSON", INVALID_ENVIRONMENT)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"{source} must be a JSON object",
            'e.g. {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}',
        )
    return value


def netns_path(arg: str) -> str:
    """A netns argument as an absolute path: bare names live in /var/run/netns."""
    if "/" not in arg:
        return os.path.join(NETNS_DIRS[0], arg)
    return os.path.abspath(arg)


def parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="cnitool",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND")
    parser.add_argument("network", nargs="?", metavar="NETWORK")
    parser.add_argument("netns", nargs="?", metavar="NETNS")
    parser.add_argument("--conf", metavar="FILE", help="use this config file instead of NETWORK")
    parser.add_argument("-i", "--ifname", help="interface name (default: $CNI_IFNAME or eth0)")
    parser.add_argument(
        "--container-id", help="container ID (default: derived from the netns path)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="result cache directory (default: /var/lib/cni)"
    )
    parser.add_argument(
        "--capability-args",
        metavar="JSON",
        help="capability arguments as a JSON object (overrides $CAP_ARGS)",
    )
    parser.add_argument(
        "--netns-create",
        action="store_true",
        help="add: create NETNS (a name; generated when omitted) first; del: remove it afterwards",
    )
    parser.add_argument(
        "--valid",
        action="append",
        metavar="CONTAINERID/IFNAME",
        help="gc: an attachment to keep (repeatable); without it every cached attachment "
        "of NETWORK is deleted",
    )
    style = parser.add_mutually_exclusive_group()
    style.add_argument(
        "--pretty", action="store_true", default=None, help="indented output (default on a tty)"
    )
    style.add_argument(
        "--raw",
        action="store_false",
        dest="pretty",
        default=None,
        help="upstream cnitool's exact output bytes (default when not a tty)",
    )
    return parser
