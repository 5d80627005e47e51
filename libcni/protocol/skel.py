"""The plugin skeleton: read the CNI environment and stdin, check versions, call the verb, print.

`dispatch()` takes the environment, stdin, stdout and stderr as parameters and keeps no state
between calls, so one process (a test, or the preloaded fork-server) can run many plugin calls.
Nothing heavy is imported here: VERSION must stay cheap.
"""

import os
import sys
import time

from libcni import PYCNI_VERSION
from libcni.protocol import version as versions
from libcni.protocol.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_ENVIRONMENT,
    INVALID_NETNS,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    CNIError,
)
from libcni.protocol.gojson import indent, quote, quote_list, version_info
from libcni.protocol.names import validate_container_id, validate_ifname, validate_network_name
from libcni.protocol.nodeconfig import node_config_path
from libcni.protocol.version import json_kind

ADD, CHECK, DEL, GC, STATUS, VERSION = "ADD", "CHECK", "DEL", "GC", "STATUS", "VERSION"

# The environment contract as a table: variable, the verbs that require it, its validator.
# Order matters: it is the order upstream reports missing variables in.
ENV_CONTRACT: tuple = (
    ("CNI_COMMAND", {ADD, CHECK, DEL, GC, STATUS}, None),
    ("CNI_CONTAINERID", {ADD, CHECK, DEL}, validate_container_id),
    ("CNI_NETNS", {ADD, CHECK}, None),
    ("CNI_IFNAME", {ADD, CHECK, DEL}, validate_ifname),
    ("CNI_ARGS", set(), None),
    ("CNI_PATH", {ADD, CHECK, DEL, GC, STATUS}, None),
    ("CNI_NETNS_OVERRIDE", set(), None),
)

# Node-wide defaults (call logs) for runtimes that cannot add keys to a config; PYCNI_CONFIG
# points elsewhere (tests, read-only /etc).

# GC's list of attachments still in use, and libcni's legacy alias for it.
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")

# Verbs that exist only from some spec version on.
MINIMUM_VERSION = {CHECK: "0.4.0", GC: "1.1.0", STATUS: "1.1.0"}


class Plugin:
    """What a plugin module hands to the skeleton: its verbs and the versions it speaks."""

    def __init__(
        self,
        name,
        add=None,
        delete=None,
        check=None,
        gc=None,
        status=None,
        supported_versions=versions.ALL,
    ):
        self.name = name
        self.verbs = {ADD: add, DEL: delete, CHECK: check, GC: gc, STATUS: status}
        self.supported_versions = tuple(supported_versions)

    @property
    def about(self) -> str:
        return f"CNI {self.name} plugin pycni v{PYCNI_VERSION}"


class Call:
    """One plugin invocation: the CNI_* variables, the raw and decoded stdin, and helpers."""

    def __init__(self, command, env, stdin_data: bytes, conf: dict, stderr):
        self.command = command
        self.env = env
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.args = env.get("CNI_ARGS", "")
        self.path = env.get("CNI_PATH", "")
        self.netns_override = env.get("CNI_NETNS_OVERRIDE", "")
        self.stdin_data = stdin_data
        self.conf = conf
        self.cni_version = versions.config_version(conf) if conf is not None else ""
        self.stderr = stderr
        self.plugin_name = ""  # the running plugin's name, set by the skeleton
        self._decoded: dict = {}

    @property
    def network_name(self) -> str:
        return self.conf.get("name", "")

    def load(self, conf_class=None):
        """The stdin config decoded into `conf_class` (a config.Struct), cached per class."""
        from libcni.protocol import config

        conf_class = conf_class or config.NetConf
        if conf_class not in self._decoded:
            self._decoded[conf_class] = config.decode(conf_class, self.conf)
        return self._decoded[conf_class]

    def chained_result(self, missing: str):
        """The prevResult a chained plugin needs, or a CNIError with upstream's `missing` text."""
        previous = self.prev_result()
        if previous is None:
            raise CNIError(INTERNAL, missing)
        return previous

    def prev_result(self):
        """The chained prevResult as a Result, or None. Decoded with the config's version rules."""
        raw = self.conf.get("prevResult")
        if raw is None:
            return None
        from libcni.protocol.result import Result

        if isinstance(raw, dict) and not raw.get("cniVersion"):
            raw = dict(raw, cniVersion=self.cni_version)
        try:
            return Result.from_json(raw, self.cni_version)
        except CNIError as err:
            raise CNIError(
                err.code, f"could not parse prevResult: {err.msg}", err.details
            ) from None

    def cni_args(self, *known: str) -> dict:
        """CNI_ARGS as {key: value} for the keys this plugin understands."""
        from libcni.protocol.cniargs import parse

        return parse(self.args, known)

    def valid_attachments(self) -> list:
        """GC's `cni.dev/valid-attachments` as [(containerID, ifname)] pairs.

        GC deletes whatever is not listed, so anything but a well-formed list is refused
        (code 7) before a plugin deletes a thing: a missing key, a string, an object, an entry
        that is not {"containerID": str, "ifname": str}. libcni's legacy alias
        `cni.dev/attachments` is read when the new key is absent.
        """
        key = next((k for k in VALID_ATTACHMENTS_KEYS if k in self.conf), None)
        if key is None or not isinstance(self.conf[key], list):
            found = "nothing" if key is None else json_kind(self.conf[key])
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f'GC needs "{VALID_ATTACHMENTS_KEYS[0]}" as a list of attachments, got {found}',
                "nothing was deleted; the runtime must list every attachment still in use",
            )
        pairs = []
        for index, entry in enumerate(self.conf[key]):
            if isinstance(entry, dict):
                container_id, ifname = entry.get("containerID"), entry.get("ifname")
                if isinstance(container_id, str) and container_id and isinstance(ifname, str):
                    pairs.append((container_id, ifname))
                    continue
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f'invalid "{key}[{index}]": expected {{"containerID": string, "ifname": string}},'
                f" got {json_kind(entry)}",
                "nothing was deleted",
            )
        return pairs

    def log(self, message: str) -> None:
        print(message, file=self.stderr)


def _env_errors(env) -> str:
    command = env.get("CNI_COMMAND", "")
    missing = []
    for name, required_for, validate in ENV_CONTRACT:
        value = env.get(name, "")
        if value == "":
            if command in required_for or name == "CNI_COMMAND":
                missing.append(name)
        elif command in required_for and validate is not None:
            validate(value)
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    return command


# Deeper JSON than this is refused with code 6 before any plugin code walks it (CNI configs
# nest 5 levels; Python's decoder and every recursive walk would overflow long before Go's 10,000).
MAX_JSON_DEPTH = 256


def _parse_stdin(stdin_data: bytes) -> dict:
    from libcni.protocol import config

    try:
        import json

        conf = json.loads(stdin_data)
    except RecursionError:
        raise CNIError(
            DECODING_FAILURE,
            f"error unmarshall network config: JSON nested deeper than {MAX_JSON_DEPTH} levels",
        ) from None
    except ValueError as err:
        raise CNIError(DECODING_FAILURE, f"error unmarshall network config: {err}") from None
    if not isinstance(conf, dict):
        raise CNIError(
            DECODING_FAILURE,
            "error unmarshall network config: the network config must be a JSON object",
        )
    conf = config.check_json(conf, stdin_data, MAX_JSON_DEPTH)
    name = conf.get("name", "")
    if not isinstance(name, str):
        raise CNIError(DECODING_FAILURE, 'error unmarshall network config: "name" must be a string')
    validate_network_name(name)
    return conf


def _check_version(plugin: Plugin, command: str, config_version: str) -> None:
    minimum = MINIMUM_VERSION.get(command)
    if minimum is not None:
        if not versions.at_least(config_version, minimum):
            raise CNIError(
                INCOMPATIBLE_VERSION,
                f"config version does not allow {command}",
                f"{command} needs cniVersion {minimum} or newer",
            )
        if not any(versions.at_least(v, config_version) for v in plugin.supported_versions):
            raise CNIError(INCOMPATIBLE_VERSION, f"plugin version does not allow {command}")
    if config_version not in plugin.supported_versions:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {quote(config_version)}, plugin supports "
            f"{quote_list(plugin.supported_versions)}",
        )


def _check_not_own_netns(call: Call) -> None:
    """Refuse to configure the plugin's own netns: upstream checks after the fact, we first."""
    if not call.netns or call.netns_override.upper() == "TRUE" or call.netns_override == "1":
        return
    from libcni.protocol.netnsid import is_current_netns

    if is_current_netns(call.netns):
        raise CNIError(
            INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
            f"CNI_NETNS={call.netns}; set CNI_NETNS_OVERRIDE=1 if this is intended",
        )


def _run(plugin: Plugin, env, stdin, stdout, stderr) -> int:
    command = _env_errors(env)
    if command == VERSION:
        _write_safely(stdout, version_info(versions.CURRENT, plugin.supported_versions))
        return 0
    try:
        stdin_data = stdin.read() if stdin is not None else b""
    except OSError as err:
        raise CNIError(IO_FAILURE, f"error reading from stdin: {err}") from None
    conf = _parse_stdin(stdin_data)
    if command not in plugin.verbs:
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND: {command}",
            "CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION",
        )
    call = Call(command, env, stdin_data, conf, stderr)
    call.plugin_name = plugin.name
    _check_version(plugin, command, call.cni_version)
    if command in (ADD, DEL):
        _check_not_own_netns(call)
    handler = plugin.verbs[command]
    if handler is None:
        # No handler: success, like upstream's skel for DEL/CHECK/GC/STATUS.
        return 0
    result = handler(call)
    if command == ADD:
        if result is None:
            raise CNIError(INTERNAL, f"{plugin.name} ADD produced no result")
        try:
            text = result.dumps(call.cni_version)
        except CNIError:
            # E.g. no IP for a 0.1.0/0.2.0 result: the ADD did its work but cannot report it,
            # so the runtime will never DEL it: undo it here.
            _undo_add(plugin, call)
            raise
        try:
            _write_safely(stdout, text)
        except OSError as err:
            raise CNIError(IO_FAILURE, f"error writing result: {err.strerror}") from None
    return 0


class _Tap:
    """The call's stdin and stdout as the skeleton saw them, kept for the call log."""

    def __init__(self, stdin, stdout):
        self.stdin, self.stdout = stdin, stdout
        self.read_data, self.written = b"", ""

    def read(self) -> bytes:
        self.read_data = self.stdin.read() if self.stdin is not None else b""
        return self.read_data

    def write(self, text: str) -> int:
        self.written += text
        return self.stdout.write(text)


def _undo_add(plugin: Plugin, call: Call) -> None:
    delete = plugin.verbs[DEL]
    if delete is None:
        return
    undo = Call(DEL, dict(call.env, CNI_COMMAND=DEL), call.stdin_data, call.conf, call.stderr)
    undo.plugin_name = plugin.name
    try:
        delete(undo)
    except Exception as err:  # the ADD's own error is the one to report
        call.log(f"{plugin.name}: undoing the ADD failed: {err}")


def dispatch(plugin: Plugin, env, stdin, stdout, stderr) -> int:
    """Run one plugin call; returns the exit status. `env` is any mapping with .get().

    Whatever happens, stdout gets valid JSON or nothing: a CNIError is printed as itself, any
    other exception as code 999 with one short line (its traceback goes to stderr only).
    """
    if env.get("CNI_COMMAND", "") == "":
        print(plugin.about, file=stderr)
        print(
            "CNI protocol versions supported: " + ", ".join(plugin.supported_versions), file=stderr
        )
        return 0
    if env.get("CNI_COMMAND") == VERSION:
        return _answer(plugin, env, stdin, stdout, stderr)
    started = time.monotonic()
    tap = _Tap(stdin, stdout)
    code = _answer(plugin, env, tap, tap, stderr)
    # The call log costs nothing unless asked for: a byte search and one stat() decide.
    if b'"logFile"' in tap.read_data or os.path.exists(node_config_path(env)):
        from libcni.protocol import calllog

        calllog.record(plugin.name, env, tap.read_data, tap.written, code, started, stderr)
    return code


def _answer(plugin: Plugin, env, stdin, stdout, stderr) -> int:
    try:
        return _run(plugin, env, stdin, stdout, stderr)
    except CNIError as err:
        error = err
    except Exception as err:  # a bug or an unexpected OS error: report it as CNI error 999
        import traceback

        traceback.print_exc(file=stderr)
        error = CNIError(INTERNAL, _short(err))
    try:
        _write_safely(stdout, indent(error.to_dict()))
    except OSError:
        pass  # nobody is reading (a closed pipe): the exit status still tells
    return 1


def _short(err: Exception) -> str:
    """One line for a 999 message: the exception's first line, capped (the rest is on stderr)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return text or f"internal error ({type(err).__name__})"


def _write_safely(stdout, text: str) -> None:
    """Write JSON text that always encodes: a lone surrogate (from a \\ud800 escape in stdin or a
    non-UTF-8 byte in the environment) becomes U+FFFD, as Go's encoder prints it."""
    if any("\ud800" <= c <= "\udfff" for c in text):
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    stdout.write(text)


def main(plugin: Plugin) -> int:
    """Entry point for an executable: the process's own environment and standard streams."""
    import os

    stdin = sys.stdin.buffer if sys.stdin is not None else None
    code = dispatch(plugin, os.environ, stdin, sys.stdout, sys.stderr)
    sys.stdout.flush()
    return code
