"""Network configuration files: finding a network by name in a directory and decoding it.

Mirrors upstream libcni's loader (conf.go):

* `<dir>/*.conflist` files, sorted by name, are network lists; the first whose `name`
  matches wins. Only if none matches are `*.conf` and `*.json` files (sorted) read as
  single-plugin configs and wrapped into a one-plugin list.
* A list's version is `cniVersion`, or with a `cniVersions` array (spec 1.1) the highest
  listed version this library implements (cniVersion included).
* Unless `loadOnlyInlinedPlugins` is true, `<dir>/<network name>/*.conf` plugin files are
  appended to the list's `plugins`.
* A broken file sorted before the network aborts the search, as upstream does, but the error
  names the file and the problem (code 7, invalid network config). When no file defines the
  network, the error names the missing network (NetworkNotFound, its `broken` attribute lists
  the files that could not be read, for the caller to warn about), not a broken neighbour.
"""

import json
import os
from dataclasses import dataclass, field

from libcni.protocol import version as versions
from libcni.protocol.errors import INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.gomap import marshal
from libcni.protocol.names import is_valid_name

LIST_EXTENSIONS = (".conflist",)
SINGLE_EXTENSIONS = (".conf", ".json")
PLUGIN_EXTENSIONS = (".conf",)

# The list-level switches that accept a JSON bool or the strings "true"/"false".
_SWITCHES = ("disableCheck", "disableGC", "loadOnlyInlinedPlugins")


class ConfigError(CNIError):
    """A network config file or document that cannot be used; always code 7."""

    def __init__(self, where: str, problem: str, details: str = ""):
        super().__init__(
            INVALID_NETWORK_CONFIG, f"{where}: {problem}" if where else problem, details
        )


class NetworkNotFound(CNIError):
    """No config in the directory defines the requested network.

    `broken` holds the ConfigErrors of the files that could not be read on the way."""

    broken: list = []


@dataclass
class PluginConf:
    """One plugin object of a list, as decoded from the file."""

    conf: dict
    type: str
    capabilities: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        """How upstream names a plugin in errors: type="bridge" name="x"."""
        text = f"type={json.dumps(self.type)}"
        own_name = self.conf.get("name")
        if isinstance(own_name, str) and own_name:
            text += f" name={json.dumps(own_name)}"
        return text


@dataclass
class NetworkList:
    """A network: its name, the version used for the whole list, its plugins in order."""

    name: str
    cni_version: str
    plugins: list = field(default_factory=list)
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False
    # The bytes a runtime caches with each attachment ("config" in the cache file).
    raw: bytes = b""
    # The file it came from, for messages; empty when decoded from bytes.
    path: str = ""


# -- decoding -------------------------------------------------------------------------------


def _decode_object(data: bytes, where: str) -> dict:
    try:
        obj = json.loads(data)
    except UnicodeDecodeError as err:
        raise ConfigError(where, f"not UTF-8 text: {err}") from None
    except ValueError as err:
        raise ConfigError(where, f"not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ConfigError(where, f"must be a JSON object, found {versions.json_kind(obj)}")
    return obj


def _expect(obj: dict, key: str, kind: type, where: str, what: str):
    """obj[key] if present and of `kind`; null counts as absent (Go leaves the zero value)."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise ConfigError(
            where, f'"{key}" must be {what}, found {versions.json_kind(value)} {json.dumps(value)}'
        )
    return value


def plugin_from_object(obj, where: str) -> PluginConf:
    """Validate one plugin object the way decoding into upstream's PluginConf does."""
    if not isinstance(obj, dict):
        raise ConfigError(where, f"a plugin must be a JSON object, found {versions.json_kind(obj)}")
    for key in ("cniVersion", "name"):
        _expect(obj, key, str, where, "a string")
    plugin_type = _expect(obj, "type", str, where, "a string")
    if not plugin_type:
        raise ConfigError(
            where,
            'missing "type"',
            "every plugin needs a type: the name of its executable in CNI_PATH",
        )
    capabilities = _expect(obj, "capabilities", dict, where, "an object of booleans") or {}
    for name, enabled in capabilities.items():
        if not isinstance(enabled, bool):
            raise ConfigError(
                where,
                f'capability "{name}" must be true or false, found {json.dumps(enabled)}',
            )
    ipam = _expect(obj, "ipam", dict, where, "an object")
    if ipam is not None:
        _expect(ipam, "type", str, f"{where}: ipam", "a string")
    _expect(obj, "dns", dict, where, "an object")
    _expect(obj, "prevResult", dict, where, "an object")
    return PluginConf(conf=obj, type=plugin_type, capabilities=capabilities)


def plugin_from_bytes(data: bytes, where: str = "") -> PluginConf:
    return plugin_from_object(_decode_object(data, where), where)


def _switch(obj: dict, key: str, where: str) -> bool:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(where, f'"{key}" must be true or false, found {json.dumps(value)}')


def _newer_than_current(version: str) -> bool:
    return versions.parse(version) > versions.parse(versions.CURRENT)


def _list_version(obj: dict, where: str) -> str:
    """cniVersion, or with cniVersions the highest version we implement among both."""
    declared = _expect(obj, "cniVersion", str, where, "a string") or ""
    if "cniVersions" not in obj:
        return declared
    listed = obj["cniVersions"]
    if not isinstance(listed, list):
        raise ConfigError(
            where, f'"cniVersions" must be an array of strings, found {versions.json_kind(listed)}'
        )
    usable = []
    for index, entry in enumerate(listed):
        if not isinstance(entry, str):
            raise ConfigError(
                where, f"cniVersions[{index}] must be a string, found {json.dumps(entry)}"
            )
        try:
            if not _newer_than_current(entry):
                usable.append(entry)
        except ValueError as err:
            raise ConfigError(
                where, f'cniVersions[{index}] "{entry}" is not a version: {err}'
            ) from None
    if declared:
        try:
            if not _newer_than_current(declared):
                usable.append(declared)
        except ValueError as err:
            raise ConfigError(where, f'cniVersion "{declared}" is not a version: {err}') from None
    if not usable:
        return declared
    return sorted(usable, key=versions.parse)[-1]


def list_from_bytes(data: bytes, where: str = "") -> NetworkList:
    """A network list document (the contents of a .conflist file)."""
    obj = _decode_object(data, where)
    if "name" not in obj:
        raise ConfigError(where, 'missing "name"', "a network list needs a name")
    name = obj["name"]
    if not isinstance(name, str):
        raise ConfigError(where, f'"name" must be a string, found {json.dumps(name)}')
    switches = {key: _switch(obj, key, where) for key in _SWITCHES}
    netlist = NetworkList(
        name=name,
        cni_version=_list_version(obj, where),
        disable_check=switches["disableCheck"],
        disable_gc=switches["disableGC"],
        load_only_inlined_plugins=switches["loadOnlyInlinedPlugins"],
        raw=data,
    )
    if "plugins" not in obj:
        if netlist.load_only_inlined_plugins:
            raise ConfigError(
                where,
                'no "plugins" array, and "loadOnlyInlinedPlugins" is true',
                "list the plugins inline or drop loadOnlyInlinedPlugins",
            )
        return netlist
    plugins = obj["plugins"]
    if not isinstance(plugins, list):
        raise ConfigError(
            where, f'"plugins" must be an array of objects, found {versions.json_kind(plugins)}'
        )
    if not plugins:
        raise ConfigError(where, '"plugins" is empty', "a network list needs at least one plugin")
    prefix = f"{where}: " if where else ""
    for index, plugin in enumerate(plugins):
        netlist.plugins.append(plugin_from_object(plugin, f"{prefix}plugins[{index}]"))
    return netlist


def list_from_plugin(plugin: PluginConf) -> NetworkList:
    """Wrap a single-plugin config into a one-plugin list, as upstream's ConfListFromConf does.

    The cached "config" is then the re-encoded list, not the original file.
    """
    name = plugin.conf.get("name") or ""
    cni_version = plugin.conf.get("cniVersion") or ""
    raw = marshal({"cniVersion": cni_version, "name": name, "plugins": [plugin.conf]})
    return NetworkList(name=name, cni_version=cni_version, plugins=[plugin], raw=raw)


# -- files ----------------------------------------------------------------------------------


def _extension(filename: str) -> str:
    """Go's filepath.Ext: from the last dot on (".conflist" is its own extension)."""
    dot = filename.rfind(".")
    return filename[dot:] if dot >= 0 else ""


def conf_files(directory: str, extensions) -> list:
    """Files (not directories) in `directory` with one of `extensions`, sorted by name.

    A missing directory has no files; any other read failure is an error.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise ConfigError("", f"cannot read config directory {directory}: {err.strerror}") from None
    names = [
        entry.name
        for entry in entries
        if not entry.is_dir(follow_symlinks=False) and _extension(entry.name) in extensions
    ]
    return [os.path.join(directory, name) for name in sorted(names)]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(path, f"cannot read: {err.strerror}") from None


def plugin_files(directory: str, network: str) -> list:
    """Plugin objects from `<directory>/<network>/*.conf`, appended to a list that allows it."""
    if not is_valid_name(network):  # never look outside the config directory
        return []
    return [
        plugin_from_bytes(_read(path), path)
        for path in conf_files(os.path.join(directory, network), PLUGIN_EXTENSIONS)
    ]


def list_from_file(path: str) -> NetworkList:
    """A .conflist file, with plugins from its per-network directory unless inlined-only."""
    netlist = list_from_bytes(_read(path), path)
    netlist.path = path
    if not netlist.load_only_inlined_plugins:
        netlist.plugins.extend(plugin_files(os.path.dirname(path), netlist.name))
    if not netlist.plugins:
        raise ConfigError(
            path,
            "no plugin configs found",
            f'add a "plugins" array or put *.conf files in '
            f"{os.path.join(os.path.dirname(path), netlist.name)}/",
        )
    return netlist


def single_from_file(path: str) -> NetworkList:
    """A .conf/.json single-plugin file, wrapped into a list."""
    data = _read(path)
    obj = _decode_object(data, path)
    if "plugins" in obj and "type" not in obj:
        raise ConfigError(
            path,
            'has a "plugins" array but is not named *.conflist',
            "rename it to .conflist; .conf and .json files hold a single plugin",
        )
    netlist = list_from_plugin(plugin_from_object(obj, path))
    netlist.path = path
    return netlist


def load_file(path: str) -> NetworkList:
    """Any config file given directly (cnitool --conf): a list if it looks like one."""
    if _extension(path) in LIST_EXTENSIONS:
        return list_from_file(path)
    obj = _decode_object(_read(path), path)
    if "plugins" in obj and "type" not in obj:
        return list_from_file(path)
    return single_from_file(path)


def _declared_name(path: str) -> str | None:
    """The "name" a broken file declares, if it can be read at all (to tell whether it is
    the network asked for)."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except (OSError, ValueError):
        return None
    name = obj.get("name") if isinstance(obj, dict) else None
    return name if isinstance(name, str) else None


def load_network(directory: str, name: str) -> NetworkList:
    """The network called `name` in `directory`, found the way upstream's LoadNetworkConf does."""
    seen = []
    broken: list = []
    # Lists first, then single-plugin files, each in file-name order.
    loaders = ((LIST_EXTENSIONS, list_from_file), (SINGLE_EXTENSIONS, single_from_file))
    for extensions, load in loaders:
        for path in conf_files(directory, extensions):
            try:
                netlist = load(path)
            except ConfigError as err:
                if _declared_name(path) == name:
                    raise  # the network asked for is the broken file
                broken.append(err)
                continue
            if netlist.name == name:
                if broken:
                    # Upstream's loader stops at the first broken file: so does the runtime.
                    first = broken[0]
                    raise ConfigError(
                        "",
                        first.msg,
                        (first.details + "; " if first.details else "")
                        + f'network "{name}" is defined in {path}, after it in load order',
                    )
                return netlist
            seen.append((netlist.name, path))
    if not seen:
        if broken:
            raise broken[0]  # nothing readable there: the broken file is the problem
        raise NetworkNotFound(
            INVALID_NETWORK_CONFIG,
            f"no net configurations found in {directory}",
            "put *.conflist (or *.conf) files there, or point NETCONFPATH elsewhere",
        )
    found = ", ".join(f"{json.dumps(n)} ({os.path.basename(p)})" for n, p in seen)
    error = NetworkNotFound(
        INVALID_NETWORK_CONFIG,
        f'no net configuration with name "{name}" in {directory}',
        f"networks found: {found}",
    )
    error.broken = broken
    raise error
