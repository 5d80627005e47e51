"""Running a network list the way a container runtime does (upstream libcni/api.go).

* ADD runs the plugins in order; each gets the previous plugin's result as `prevResult`.
  The first failure stops the list (the runtime is expected to DEL later). The last result
  is cached.
* DEL runs them in reverse; from 0.4.0 on each gets the cached result. The cache file is
  removed afterwards.
* CHECK (0.4.0+, unless `disableCheck`) runs them in order with the cached result.
* GC first deletes every cached attachment of the network that is not in the valid set,
  then (1.1.0+) calls GC on each plugin with `cni.dev/valid-attachments`.
* STATUS (1.1.0+) asks each plugin in order; the first error is the answer.

Each plugin's stdin is its object from the list plus `name` and `cniVersion` of the list,
`prevResult`, and `runtimeConfig` holding the runtime's capability arguments the plugin
declared. Plugin errors keep their CNI code; the message says which plugin and verb failed.
"""

import json
import os
import sys
from dataclasses import dataclass, field

from libcni.delegation import invoke
from libcni.protocol import version as versions
from libcni.protocol.errors import INCOMPATIBLE_VERSION, INTERNAL, CNIError
from libcni.protocol.gomap import marshal
from libcni.protocol.names import validate_container_id, validate_ifname, validate_network_name
from libcni.protocol.result import Result
from libcni.runtime import cache
from libcni.runtime.conflist import NetworkList, PluginConf

# Keys libcni adds for GC. The spec first named it cni.dev/attachments (upstream #1101), so
# both are sent.
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")

# What a runtime sends to learn a plugin's versions; the dummy values satisfy old skeletons.
VERSION_PROBE_STDIN = b'{"cniVersion":"' + versions.CURRENT.encode() + b'"}'
VERSION_PROBE_ENV = {
    "CNI_COMMAND": "VERSION",
    "CNI_CONTAINERID": "",
    "CNI_NETNS": "dummy",
    "CNI_IFNAME": "dummy",
    "CNI_ARGS": "",
    "CNI_PATH": "dummy",
}


@dataclass
class RuntimeConf:
    """One attachment's arguments: who, where, and the runtime's extra data."""

    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: list = field(default_factory=list)  # [(key, value)], sent as CNI_ARGS k=v;k=v
    capability_args: dict = field(default_factory=dict)


class PluginFailed(CNIError):
    """A plugin of the list failed; keeps its code, names the plugin and the verb."""

    def __init__(self, plugin: PluginConf, verb: str, cause: CNIError):
        super().__init__(
            cause.code, f"plugin {plugin.description} failed ({verb}): {cause.msg}", cause.details
        )
        self.cause = cause
        self.plugin = plugin


class DeleteIncomplete(CNIError):
    """DEL went on past failing plugins (keep_going) and reports them all; the code is the
    first one's. The cached result was kept, so another DEL still has it."""

    def __init__(self, network: str, errors: list):
        super().__init__(
            errors[0].code,
            f'DEL of network "{network}" was incomplete: ' + "; ".join(str(err) for err in errors),
            "the other plugins were deleted; the cached result was kept for another DEL "
            "once the failing plugin is fixed",
        )
        self.errors = errors


class GCFailed(CNIError):
    """GC carries on after errors and reports them all; the code is the first one's."""

    def __init__(self, network: str, errors: list):
        super().__init__(
            errors[0].code,
            f'garbage collection of network "{network}" failed: '
            + "; ".join(str(err) for err in errors),
        )
        self.errors = errors


def cni_args_text(args) -> str:
    """CNI_ARGS as runtimes send it: k=v pairs joined by ';'."""
    return ";".join(f"{key}={value}" for key, value in args)


def runtime_config(plugin: PluginConf, capability_args: dict) -> dict:
    """The capability arguments this plugin declared true, among those the runtime supplied."""
    return {
        name: capability_args[name]
        for name, enabled in plugin.capabilities.items()
        if enabled and name in capability_args
    }


def build_stdin(
    netlist: NetworkList, plugin: PluginConf, prev_result: dict | None, rt: RuntimeConf | None
) -> bytes:
    """What one plugin of the list reads on stdin."""
    conf = dict(plugin.conf)
    conf["name"] = netlist.name
    conf["cniVersion"] = netlist.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    if rt is not None:
        wanted = runtime_config(plugin, rt.capability_args or {})
        # Only replaced when there is something to pass, as upstream does: a runtimeConfig
        # written in the file itself then reaches the plugin unchanged.
        if wanted:
            conf["runtimeConfig"] = wanted
    return marshal(conf)


def probe_version(plugin_path: str, environ=None, stderr=None) -> list:
    """The spec versions a plugin supports, asked the way runtimes ask (VERSION command).

    A plugin too old to know VERSION is taken to support 0.1.0 only.
    """
    env = dict(os.environ if environ is None else environ)
    env.update(VERSION_PROBE_ENV)
    try:
        output = invoke.run(plugin_path, env, VERSION_PROBE_STDIN, stderr)
    except CNIError as err:
        if err.msg == "unknown CNI_COMMAND: VERSION":
            return ["0.1.0"]
        raise
    return decode_version_info(output)


def decode_version_info(output: bytes) -> list:
    try:
        info = json.loads(output)
    except ValueError as err:
        raise CNIError(INTERNAL, f"decoding version info: {err}") from None
    if not isinstance(info, dict) or not info.get("cniVersion"):
        raise CNIError(INTERNAL, "decoding version info: missing field cniVersion")
    supported = info.get("supportedVersions")
    if not supported:
        if info["cniVersion"] == "0.2.0":
            return ["0.1.0", "0.2.0"]
        raise CNIError(INTERNAL, "decoding version info: missing field supportedVersions")
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise CNIError(INTERNAL, "decoding version info: supportedVersions is not a string list")
    return supported


def _validate_attachment(netlist: NetworkList, rt: RuntimeConf) -> None:
    """The names end up in CNI_* variables and the cache file name: check them first."""
    validate_container_id(rt.container_id)
    validate_network_name(netlist.name)
    validate_ifname(rt.ifname)


class Runtime:
    """The runtime side of libcni: find plugins, exec them, chain results, keep the cache.

    `cni_path` is the list of plugin directories; `environ` the base environment plugins
    inherit (the caller's by default); plugin stderr is copied to `stderr`.
    """

    def __init__(self, cni_path, cache_dir: str = cache.DEFAULT_DIR, environ=None, stderr=None):
        self.cni_path = [d for d in cni_path if d]
        self.cache_dir = cache_dir or cache.DEFAULT_DIR
        self.environ = dict(os.environ if environ is None else environ)
        self.stderr = sys.stderr if stderr is None else stderr

    # -- plumbing ------------------------------------------------------------------------

    def env(self, command: str, rt: RuntimeConf) -> dict:
        env = dict(self.environ)
        env.update(
            {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": rt.container_id,
                "CNI_NETNS": rt.netns,
                "CNI_ARGS": cni_args_text(rt.args),
                "CNI_IFNAME": rt.ifname,
                "CNI_PATH": ":".join(self.cni_path),
            }
        )
        return env

    def find(self, plugin_type: str) -> str:
        return invoke.find_plugin(plugin_type, ":".join(self.cni_path))

    def _exec(self, plugin: PluginConf, verb: str, stdin: bytes, rt: RuntimeConf) -> bytes:
        try:
            path = self.find(plugin.type)
            return invoke.run(path, self.env(verb, rt), stdin, self.stderr)
        except CNIError as err:
            raise PluginFailed(plugin, verb.lower(), err) from None

    def _decode_result(self, plugin: PluginConf, output: bytes, cni_version: str) -> Result:
        """A plugin's ADD output as a Result of its own version (none given: the config's)."""
        try:
            try:
                obj = json.loads(output)
            except ValueError as err:
                raise CNIError(INTERNAL, f"failed to unmarshal raw result: {err}") from None
            if obj is None:
                obj = {}
            if not isinstance(obj, dict):
                raise CNIError(INTERNAL, "the plugin's result is not a JSON object")
            own = obj.get("cniVersion")
            if not isinstance(own, str) or not own:
                own = cni_version or "0.1.0"
                obj = dict(obj, cniVersion=own)
            try:
                return Result.from_json(obj, own)
            except CNIError as err:
                raise CNIError(INTERNAL, f"invalid result: {err.msg}", err.details) from None
        except CNIError as err:
            raise PluginFailed(plugin, "add", err) from None

    # -- verbs ---------------------------------------------------------------------------

    def add(self, netlist: NetworkList, rt: RuntimeConf) -> Result:
        """ADD every plugin in order; returns the final result (in its own version)."""
        _validate_attachment(netlist, rt)
        result = None
        for plugin in netlist.plugins:
            prev = result.to_version(result.cni_version) if result is not None else None
            stdin = build_stdin(netlist, plugin, prev, rt)
            output = self._exec(plugin, "ADD", stdin, rt)
            result = self._decode_result(plugin, output, netlist.cni_version)
        if result is None:
            raise CNIError(INTERNAL, f'network "{netlist.name}" has no plugins')
        cache.write(
            self.cache_dir, netlist.name, rt, netlist.raw, result.to_version(result.cni_version)
        )
        return result

    def check(self, netlist: NetworkList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order against the cached result."""
        if not versions.at_least(netlist.cni_version, "0.4.0"):
            raise CNIError(
                INCOMPATIBLE_VERSION,
                f'configuration version "{netlist.cni_version}" does not support the CHECK command',
                "CHECK needs cniVersion 0.4.0 or newer",
            )
        if netlist.disable_check:
            return
        _validate_attachment(netlist, rt)
        try:
            cached = self.cached_result(netlist, rt)
        except CNIError as err:
            raise CNIError(
                err.code, f'failed to get network "{netlist.name}" cached result: {err.msg}'
            ) from None
        for plugin in netlist.plugins:
            self._exec(plugin, "CHECK", build_stdin(netlist, plugin, cached, rt), rt)

    def delete(self, netlist: NetworkList, rt: RuntimeConf, keep_going: bool = False) -> None:
        """DEL every plugin in reverse order, then forget the cached result.

        As upstream, the first failure stops the DEL. With `keep_going` (cnitool) every plugin
        is tried: the failures, a missing plugin among them, are raised together afterwards as
        DeleteIncomplete, and the cached result is kept for the next DEL."""
        _validate_attachment(netlist, rt)
        cached = None
        if versions.at_least(netlist.cni_version, "0.4.0"):
            try:
                cached = self.cached_result(netlist, rt)
            except CNIError:
                # An unusable cache must not block the delete: drop it and carry on.
                cache.remove(self.cache_dir, netlist.name, rt)
        errors = []
        for plugin in reversed(netlist.plugins):
            try:
                self._exec(plugin, "DEL", build_stdin(netlist, plugin, cached, rt), rt)
            except CNIError as err:
                if not keep_going:
                    raise
                errors.append(err)
        if errors:
            raise DeleteIncomplete(netlist.name, errors)
        cache.remove(self.cache_dir, netlist.name, rt)

    def missing_plugins(self, netlist: NetworkList) -> list:
        """The plugin types of the list (and the IPAM types they delegate to) in no plugin
        directory, as "TYPE (plugin N)" / "TYPE (ipam of plugin N)", N counted from 1."""
        missing = []
        for number, plugin in enumerate(netlist.plugins, 1):
            wanted = [(plugin.type, f"plugin {number}")]
            ipam = plugin.conf.get("ipam")
            if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
                wanted.append((ipam["type"], f"ipam of plugin {number}"))
            for plugin_type, role in wanted:
                try:
                    self.find(plugin_type)
                except CNIError:
                    missing.append(f"{plugin_type} ({role})")
        return missing

    def gc(self, netlist: NetworkList, valid_attachments=None) -> list:
        """Garbage-collect the network; returns the stale attachments that were deleted.

        `valid_attachments` is a list of (container_id, ifname); None means the runtime
        passed no set (every cached attachment is stale and plugins get no valid list).
        """
        if netlist.disable_gc:
            return []
        valid = {tuple(pair) for pair in valid_attachments or ()}
        errors: list = []
        deleted = []
        try:
            cached = cache.attachments(self.cache_dir)
        except CNIError as err:
            # Upstream silently skips the whole GC here; we report it and still ask plugins.
            errors.append(err)
            cached = []
        for attachment in cached:
            if attachment.network != netlist.name:
                continue
            if (attachment.container_id, attachment.ifname) in valid:
                continue
            rt = RuntimeConf(
                container_id=attachment.container_id,
                netns=attachment.netns,
                ifname=attachment.ifname,
                args=attachment.cni_args,
                capability_args=attachment.capability_args,
            )
            try:
                self.delete(netlist, rt)
                deleted.append((attachment.container_id, attachment.ifname))
            except CNIError as err:
                errors.append(
                    CNIError(
                        err.code,
                        f"failed to delete stale attachment {rt.container_id} {rt.ifname}: "
                        f"{err.msg}",
                        err.details,
                    )
                )
        if self._at_least(netlist, "1.1.0"):
            inject = {}
            if valid_attachments is not None:
                listed = [
                    {"containerID": container_id, "ifname": ifname}
                    for container_id, ifname in valid_attachments
                ]
                inject = {key: listed for key in VALID_ATTACHMENTS_KEYS}
            for plugin in netlist.plugins:
                stdin = marshal(
                    dict(plugin.conf, name=netlist.name, cniVersion=netlist.cni_version, **inject)
                )
                try:
                    self._exec(plugin, "GC", stdin, RuntimeConf())
                except CNIError as err:
                    errors.append(err)
        if errors:
            raise GCFailed(netlist.name, errors)
        return deleted

    def status(self, netlist: NetworkList) -> list:
        """STATUS of every plugin in order; returns the plugin types asked (none before 1.1.0)."""
        if not self._at_least(netlist, "1.1.0"):
            return []
        for plugin in netlist.plugins:
            stdin = marshal(dict(plugin.conf, name=netlist.name, cniVersion=netlist.cni_version))
            self._exec(plugin, "STATUS", stdin, RuntimeConf())
        return [plugin.type for plugin in netlist.plugins]

    # -- state and versions --------------------------------------------------------------

    def cached_result(self, netlist: NetworkList, rt: RuntimeConf) -> dict | None:
        """The cached ADD result in the list's version, or None."""
        return cache.read_result(self.cache_dir, netlist.name, netlist.cni_version, rt)

    def cached_attachments(self, container_id: str = "") -> list:
        return cache.attachments(self.cache_dir, container_id)

    def version_info(self, plugin_type: str) -> list:
        """The versions the plugin called `plugin_type` in CNI_PATH supports."""
        return probe_version(self.find(plugin_type), self.environ, self.stderr)

    @staticmethod
    def _at_least(netlist: NetworkList, minimum: str) -> bool:
        try:
            return versions.at_least(netlist.cni_version, minimum)
        except CNIError:
            return False
