"""The runtime's result cache: one file per attachment, in upstream libcni's exact format.

`<cache dir>/results/<network>-<containerID>-<ifname>` holds, as one line of Go-encoded JSON:

    {"kind":"cniCacheV1","containerId":…,"config":<base64 of the list bytes>,"ifName":…,
     "networkName":…,"netns":…,"cniArgs":[[k,v],…],"capabilityArgs":{…},"result":{…}}

(`netns`, `cniArgs`, `capabilityArgs` and `result` left out when empty, as Go's omitempty
does). Runtimes share this directory (containerd and CRI-O read each other's files through
libcni), so the layout must not drift. Files written before cniCacheV1 hold a bare result;
they are still read.

The parts of the file name come from the caller; they are validated with the CNI name rules
so that none can point outside the cache directory. The spec sets no length limit on container
IDs and network names: a name longer than one path component allows is cut and digest-suffixed
(statefile.fitted_name; upstream's name whenever it fits), and the file's content says whose
it is.

`rt` below is anything with `container_id`, `ifname`, `netns`, `args` ([(key, value)]) and
`capability_args` attributes (netlist.RuntimeConf).
"""

import base64
import json
import os
from dataclasses import dataclass, field

from libcni.protocol import gojson
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.protocol.gojson import compact
from libcni.protocol.gomap import normalize
from libcni.protocol.names import validate_container_id, validate_ifname, validate_network_name
from libcni.protocol.result import Result
from libcni.statefile import fitted_name, is_fitted

DEFAULT_DIR = "/var/lib/cni"
KIND = "cniCacheV1"
RESULTS = "results"


@dataclass
class Attachment:
    """One cached attachment, as GC and runtimes recovering state see it."""

    container_id: str
    network: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list = field(default_factory=list)
    capability_args: dict = field(default_factory=dict)


def result_file(cache_dir: str, network: str, container_id: str, ifname: str) -> str:
    """The cache file of one attachment; refuses names that could leave the cache directory."""
    if not network or not container_id or not ifname:
        raise CNIError(
            INTERNAL,
            "cache file path requires network name, container ID, and interface name",
            f"network={json.dumps(network)} containerID={json.dumps(container_id)} "
            f"ifname={json.dumps(ifname)}",
        )
    validate_network_name(network)
    validate_container_id(container_id)
    validate_ifname(ifname)
    return os.path.join(cache_dir, RESULTS, fitted_name(f"{network}-{container_id}-{ifname}"))


def encode(network: str, rt, config: bytes, result: dict | None) -> bytes:
    """The cache file's bytes: Go's struct field order, maps with sorted keys."""
    entry: dict = {
        "kind": KIND,
        "containerId": rt.container_id,
        "config": base64.b64encode(config).decode(),
        "ifName": rt.ifname,
        "networkName": network,
    }
    if rt.netns:
        entry["netns"] = rt.netns
    if rt.args:
        entry["cniArgs"] = [[key, value] for key, value in rt.args]
    if rt.capability_args:
        entry["capabilityArgs"] = normalize(rt.capability_args)
    if result:
        entry["result"] = normalize(result)
    return compact(entry).encode()


def write(cache_dir: str, network: str, rt, config: bytes, result: dict) -> str:
    """Cache the final ADD result (a dict in its own version's shape); returns the file path."""
    path = result_file(cache_dir, network, rt.container_id, rt.ifname)
    data = encode(network, rt, config, result)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Written aside and renamed so a crash never leaves a half-written cache behind;
        # the dot prefix keeps the temporary file out of attachments().
        tmp = os.path.join(
            directory, fitted_name(f".{os.path.basename(path)}", f".{os.getpid()}.tmp")
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
    except OSError as err:
        raise CNIError(
            INTERNAL,
            f'failed to set network "{network}" cached result: {err.strerror}',
            f"cache file {path}",
        ) from None
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove(cache_dir: str, network: str, rt) -> None:
    """Forget an attachment. Missing files and unusable names are ignored, as upstream does."""
    try:
        path = result_file(cache_dir, network, rt.container_id, rt.ifname)
    except CNIError:
        return
    _unlink(path)


def _read_bytes(cache_dir: str, network: str, rt) -> bytes | None:
    path = result_file(cache_dir, network, rt.container_id, rt.ifname)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None  # not cached (or unreadable): the caller proceeds without it


def _decode_v1(data: bytes) -> dict | None:
    """The cniCacheV1 entry, or None when the file is something else (a legacy result)."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("kind") == KIND:
        return obj
    return None


def convert_result(obj, cni_version: str) -> dict:
    """A cached result (it names its own version; none means 0.1.0) in `cni_version`'s shape."""
    try:
        if not isinstance(obj, dict):
            raise CNIError(INTERNAL, "the cached result is not a JSON object")
        own = obj.get("cniVersion") or "0.1.0"
        return Result.from_json(obj, own).to_version(cni_version)
    except (CNIError, ValueError) as err:
        text = err.msg if isinstance(err, CNIError) else str(err)
        raise CNIError(
            INTERNAL, f'failed to convert cached result to config version "{cni_version}": {text}'
        ) from None


def read_result(cache_dir: str, network: str, cni_version: str, rt) -> dict | None:
    """The cached ADD result converted to `cni_version`, or None when nothing is cached."""
    data = _read_bytes(cache_dir, network, rt)
    if data is None:
        return None
    entry = _decode_v1(data)
    if entry is None:
        legacy = gojson.loads(data, f'cached result of network "{network}" is not JSON')
        return convert_result(legacy, cni_version)
    if not entry.get("result"):
        return None
    return convert_result(entry["result"], cni_version)


def read_config(cache_dir: str, network: str, rt) -> Attachment | None:
    """What was cached with the attachment (config bytes, CNI args, capability args)."""
    data = _read_bytes(cache_dir, network, rt)
    if data is None:
        return None
    obj = gojson.loads(data, f'failed to unmarshal cached network "{network}" config')
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        raise CNIError(
            INTERNAL, f'read cached network "{network}" config has wrong kind: {kind or ""}'
        )
    return _attachment(obj)


def _attachment(obj: dict) -> Attachment:
    try:
        config = base64.b64decode(obj.get("config") or "", validate=True)
    except ValueError:
        config = b""
    args = obj.get("cniArgs") or []
    return Attachment(
        container_id=str(obj.get("containerId") or ""),
        network=str(obj.get("networkName") or ""),
        ifname=str(obj.get("ifName") or ""),
        config=config,
        netns=str(obj.get("netns") or ""),
        cni_args=[(str(pair[0]), str(pair[1])) for pair in args if len(pair) == 2],
        capability_args=obj.get("capabilityArgs") or {},
    )


def attachments(cache_dir: str, container_id: str = "") -> list:
    """Every cniCacheV1 attachment in the cache (of one container, if given), by file name.

    Unreadable, legacy and incomplete files are skipped, as upstream does.
    """
    directory = os.path.join(cache_dir, RESULTS)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise CNIError(
            INTERNAL, f"cannot list the result cache {directory}: {err.strerror}"
        ) from None
    found = []
    for name in names:
        if name.startswith("."):
            continue
        if container_id and not is_fitted(name):
            part = f"-{container_id}-"
            position = name.find(part)
            if position <= 0 or position + len(part) >= len(name):
                continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                entry = _decode_v1(f.read())
        except OSError:
            continue
        if entry is None:
            continue
        try:
            attachment = _attachment(entry)
        except (TypeError, AttributeError):
            continue
        if container_id and attachment.container_id != container_id:
            continue
        if not attachment.ifname or not attachment.network:
            continue
        found.append(attachment)
    return found
