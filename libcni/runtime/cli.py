"""cnitool's command line: its usage text, its flags, and the parsing of what it is given
(CNI_ARGS, capability arguments, netns names), with upstream cnitool's derived container ID."""

import os

from libcni.protocol import gojson
from libcni.protocol.errors import INVALID_ENVIRONMENT, CNIError

DEFAULT_NETCONFPATH = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin"
NETNS_DIRS = ("/var/run/netns", "/run/netns")
COMMANDS = ("add", "check", "del", "gc", "status", "version", "doctor")

USAGE = (
    "cnitool [options] {add|check|del|gc|status|version} NETWORK [NETNS]\n"
    "       cnitool doctor [options]\n"
    "       cnitool help [COMMAND] | cnitool COMMAND --help"
)

# Per command: the arguments after its name, and what it does (`cnitool help COMMAND`).
COMMAND_HELP = {
    "add": (
        "NETWORK NETNS",
        "Run ADD on every plugin of NETWORK in order and print the result; the result is\n"
        "cached (--cache-dir) for check and del. First checks that every plugin of the list\n"
        "(and every IPAM plugin it names) is in CNI_PATH: if one is missing nothing is run\n"
        "(exit status 3), so a typo in a conflist never leaves half an attachment behind.",
    ),
    "check": (
        "NETWORK NETNS",
        "Run CHECK on every plugin of NETWORK with the cached ADD result (cniVersion\n"
        "0.4.0+). Without --capability-args/$CAP_ARGS the capability arguments cached by\n"
        "add are passed again (portmap needs its portMappings to check its rules).",
    ),
    "del": (
        "NETWORK NETNS",
        "Run DEL on every plugin of NETWORK in reverse order, then forget the cached result.\n"
        "Without --capability-args/$CAP_ARGS the capability arguments cached by add are\n"
        "passed again. A plugin that is missing or fails does not stop the others: each\n"
        "is reported, the cached result is kept for another try, and the exit status is 1.",
    ),
    "gc": (
        "NETWORK",
        "Delete every cached attachment of NETWORK not named with --valid, then run GC on\n"
        "each plugin (cniVersion 1.1.0+) with the valid attachments.",
    ),
    "status": (
        "NETWORK",
        "Run STATUS on each plugin of NETWORK: exit status 0 when the network is ready.\n"
        "STATUS exists from cniVersion 1.1.0 on; on an older list no plugin can be asked,\n"
        "which is reported as an error (exit status 3), never as ready.",
    ),
    "version": (
        "[NETWORK]",
        "The CNI versions each plugin of NETWORK supports, as a runtime asks them (VERSION);\n"
        "exit status 1 if one does not speak the network's cniVersion. Without NETWORK:\n"
        "cnitool's own versions.",
    ),
}

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
  help [COMMAND]        this text, or one command's (also `cnitool COMMAND --help`)

NETWORK is a network name from the config directory, or a path to a .conflist/.conf/.json
file (anything containing a "/"). NETNS is a netns path, or a name in /var/run/netns."""

EPILOG = """\
how plugins run:
  By default a frozen cnitool runs the pycni plugins of its own install inside its own
  process (no exec, no daemon: the same code, ~30 ms less per plugin) and execs anything
  else (Go plugins, another build). With --exec (or CNITOOL_EXEC=1) every plugin is
  exec'd as a runtime does: through its front door, which hands the call to the pycni
  daemon when one runs. Use --exec to reproduce or time what containerd or podman see.

environment:
  NETCONFPATH   config directory (default /etc/cni/net.d)
  CNI_PATH      ':'-separated plugin directories (default /opt/cni/bin)
  CNI_IFNAME    interface name when --ifname is not given (default eth0)
  CNI_ARGS      KEY=VALUE;KEY=VALUE passed to plugins as CNI_ARGS
  CAP_ARGS      JSON object of capability arguments (see --capability-args)
  CNITOOL_EXEC  1 (or true, yes): as --exec

The container ID is derived from the netns path (cnitool-<sha512 prefix>), as upstream
cnitool does, so add and del of the same path meet in the cache.

exit status:
  0  done
  1  a plugin (or cnitool) reported an error: the CNI error JSON is on stdout, an
     explanation on stderr; del ran every plugin it could and kept the cached result
  2  the command line is wrong (usage on stderr)
  3  nothing was run: a plugin of the list is in no plugin directory (add, check), or
     status on a list whose cniVersion has no STATUS (before 1.1.0)
  doctor: 0 when nothing is wrong, 1 when it found a problem"""

# Exit statuses (EPILOG explains them).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUN = 3

TRUE_WORDS = ("1", "true", "yes", "on")


def exec_wanted(opts, environ) -> bool:
    """--exec, or CNITOOL_EXEC set to a true word."""
    return bool(opts.exec) or environ.get("CNITOOL_EXEC", "").strip().lower() in TRUE_WORDS


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


# Every option: its flags, argparse keywords, and the commands it is for (the per-command help
# lists only those).
ALL = ("add", "check", "del", "gc", "status", "version")
ATTACH = ("add", "check", "del")
OPTIONS = (
    (("--conf",), {"metavar": "FILE", "help": "use this config file instead of NETWORK"}, ALL),
    (
        ("-i", "--ifname"),
        {"help": "interface name in the container (default: $CNI_IFNAME or eth0)"},
        ATTACH,
    ),
    (
        ("--container-id",),
        {"help": "container ID (default: derived from the netns path)"},
        ATTACH,
    ),
    (
        ("--cache-dir",),
        {"default": None, "help": "result cache directory (default: /var/lib/cni)"},
        ATTACH + ("gc",),
    ),
    (
        ("--capability-args",),
        {
            "metavar": "JSON",
            "help": "capability arguments as a JSON object (overrides $CAP_ARGS; check and "
            "del default to those cached by add)",
        },
        ATTACH,
    ),
    (
        ("--netns-create",),
        {
            "action": "store_true",
            "help": "add: create NETNS (a name; generated when omitted) first; "
            "del: remove it afterwards",
        },
        ("add", "del"),
    ),
    (
        ("--valid",),
        {
            "action": "append",
            "metavar": "CONTAINERID/IFNAME",
            "help": "gc: an attachment to keep (repeatable); without it every cached "
            "attachment of NETWORK is deleted",
        },
        ("gc",),
    ),
    (
        ("--exec",),
        {
            "action": "store_true",
            "help": "exec every plugin as a runtime does (front door, daemon when one runs) "
            "instead of running pycni's own in cnitool's process (also CNITOOL_EXEC=1)",
        },
        ALL,
    ),
)


def _add_options(parser, command: str | None) -> None:
    for flags, keywords, commands in OPTIONS:
        if command is None or command in commands:
            parser.add_argument(*flags, **keywords)
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


def parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="cnitool",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        choices=COMMANDS,
        metavar="COMMAND",
        help="one of " + ", ".join(COMMANDS) + " (`cnitool help COMMAND`)",
    )
    parser.add_argument("network", nargs="?", metavar="NETWORK", help="network name or file")
    parser.add_argument("netns", nargs="?", metavar="NETNS", help="netns path or name")
    _add_options(parser, None)
    return parser


def command_parser(command: str):
    """The help of one command: its arguments, what it does, and only its options."""
    import argparse

    arguments, text = COMMAND_HELP[command]
    parser = argparse.ArgumentParser(
        prog=f"cnitool {command}",
        usage=f"cnitool {command} [options] {arguments}",
        description=text,
        epilog="exit status and environment: cnitool --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name in arguments.strip("[]").split():
        parser.add_argument(
            name.lower(),
            metavar=name,
            nargs="?",
            help={
                "NETWORK": "a network name in $NETCONFPATH, or a config file path",
                "NETNS": "a netns path, or a name in /var/run/netns",
            }[name],
        )
    _add_options(parser, command)
    return parser
