"""tuning: chained after a main plugin, set net sysctls and link attributes of the container
interface (mac, promisc, mtu, allmulti, txQLen); DEL puts the saved attributes back.

State outside the netns: the backup file per (container ID, ifname), upstream's plus a key
naming its attachment (linktuning.py), so DEL without the netns and GC remove it.
"""

from libcni.kernel import macaddr
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import MTU, NetConf, Path, Struct, Uint32
from libcni.protocol.errors import INTERNAL, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CNIError
from libcni.protocol.result import Result
from meta.tuning import linktuning

DEFAULT_DATA_DIR = "/run/cni/tuning"


class CniArgs(Struct):
    sysctl: dict[str, str] | None = None
    mac: str | None = None
    promisc: bool | None = None
    mtu: MTU | None = None
    allmulti: bool | None = None
    txQLen: Uint32 | None = None


class Args(Struct):
    cni: CniArgs = None  # type: ignore[assignment]


class RuntimeConfig(Struct):
    mac: str = ""


class TuningConf(NetConf):
    sysctl: dict[str, str] = {}
    mac: str = ""
    promisc: bool = False
    mtu: MTU = 0
    txQLen: Uint32 | None = None
    allmulti: bool | None = None
    dataDir: Path = ""
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]
    args: Args = None  # type: ignore[assignment]


def load_conf(call: skel.Call) -> TuningConf:
    refuse_duplicate_sysctls(call.stdin_data)
    conf = call.load(TuningConf)
    conf.dataDir = conf.dataDir or DEFAULT_DATA_DIR
    # MAC precedence: config < CNI_ARGS < runtimeConfig.mac < args.cni.mac (upstream's order).
    env_mac = call.cni_args("MAC").get("MAC", "")
    if env_mac:
        conf.mac = env_mac
    if conf.runtimeConfig is not None and conf.runtimeConfig.mac:
        conf.mac = conf.runtimeConfig.mac
    override = conf.args.cni if conf.args is not None else None
    if override is not None:
        conf.sysctl = dict(conf.sysctl, **(override.sysctl or {}))  # upstream panics here
        for key in ("mac", "promisc", "mtu", "allmulti", "txQLen"):
            if getattr(override, key) is not None:
                setattr(conf, key, getattr(override, key))
    if conf.mac:
        conf.mac = macaddr.parse_mac(conf.mac, "tuning mac")
    if "/" in call.ifname:
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"Interface name ({call.ifname}) contains an invalid character /",
        )
    return conf


class _Object(dict):
    """A decoded JSON object that remembers whether a key appeared twice in it."""

    duplicated = False


def _object(items: list) -> _Object:
    obj = _Object(items)
    obj.duplicated = len(obj) != len(items)
    return obj


def refuse_duplicate_sysctls(stdin_data: bytes) -> None:
    """A key written twice in `sysctl` is ambiguous (JSON keeps only the last): refuse it."""
    import json

    doc = json.loads(stdin_data, object_pairs_hook=_object)
    sysctls = doc.get("sysctl") if isinstance(doc, dict) else None
    if isinstance(sysctls, _Object) and sysctls.duplicated:
        raise CNIError(INVALID_NETWORK_CONFIG, "duplicated sysctl keys are not allowed")


def attributes(conf: TuningConf) -> dict:
    """The link attributes this config changes (promisc only ever turns on, as upstream)."""
    wanted: dict = {}
    if conf.mac:
        wanted["mac"] = conf.mac
    if conf.promisc:
        wanted["promisc"] = True
    if conf.mtu:
        wanted["mtu"] = conf.mtu
    if conf.allmulti is not None:
        wanted["allmulti"] = conf.allmulti
    if conf.txQLen is not None:
        wanted["txQLen"] = conf.txQLen
    return wanted


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    linktuning.check_allowlist(conf.sysctl)
    previous = call.chained_result("Required prevResult missing")
    wanted = attributes(conf)
    with Session(call.netns) as container:
        linktuning.write_sysctls(container, call.ifname, conf.sysctl)
        if wanted:
            link = linktuning.container_link(container, call.ifname)
            before = linktuning.current(link)
            path = linktuning.backup_path(conf.dataDir, call.container_id, call.ifname)
            owner = linktuning.owner(conf.name, call.container_id, call.ifname)
            linktuning.save_backup(path, {key: before[key] for key in wanted}, owner)
            linktuning.apply(container, link, wanted)
    if conf.mac:
        for entry in previous.interfaces:
            if entry.get("name") == call.ifname and entry.get("sandbox") == call.netns:
                entry["mac"] = conf.mac
    return previous


def delete(call: skel.Call) -> None:
    conf = load_conf(call)
    path = linktuning.backup_path(conf.dataDir, call.container_id, call.ifname)
    saved = linktuning.load_backup(path)
    if saved is None:
        return
    # Without the netns there is nothing to restore to: the file goes anyway (upstream leaves
    # it behind for good).
    container = Session.existing(call.netns) if saved else None
    if container is not None:
        with container:
            linktuning.restore(container, call.ifname, saved)
    linktuning.remove_backup(path)


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    call.chained_result("Required prevResult missing")
    with Session(call.netns) as container:
        found = linktuning.read_sysctls(container, call.ifname, conf.sysctl)
        for key, wanted in conf.sysctl.items():
            if found[key] != wanted:
                path = linktuning.sysctl_path(key, call.ifname)
                raise CNIError(
                    INTERNAL,
                    f"Error: Tuning configured value of {path} is {wanted}, "
                    f"current value is {found[key]}",
                )
        now = linktuning.current(linktuning.container_link(container, call.ifname))
    expected = attributes(conf)
    expected.setdefault("promisc", False)  # promisc must be off unless configured on
    for key, value in expected.items():
        if now[key] != value:
            raise CNIError(
                INTERNAL,
                f"Error: Tuning configured {key} of {call.ifname} is {value}, "
                f"current value is {now[key]}",
            )


def gc(call: skel.Call) -> None:
    conf = call.load(TuningConf)
    linktuning.collect(conf.dataDir or DEFAULT_DATA_DIR, conf.name, call.valid_attachments())


PLUGIN = skel.Plugin("tuning", add=add, delete=delete, check=check, gc=gc)
