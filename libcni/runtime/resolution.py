"""What each network runs (plugin and IPAM types), where each resolves and whose it is, and
the VERSION probe (for `cnitool doctor`).

A runtime takes the first plugin directory that holds a file of the plugin's name. Which
implementation that is cannot be told from VERSION (pycni and Go answer in the same format), so
the file is looked at:

- pycni: the native front door (an ELF file naming pycni, with `_internal/pycni` beside it),
  the frozen program itself, or a source launcher (a script that runs pycni's modules);
- Go: an ELF file with Go's build ID note or build-info block (upstream's plugins);
- other: anything else (another vendor's plugin, a shell script, a C program).
"""

import os
import subprocess
from dataclasses import dataclass

from libcni.protocol.errors import CNIError
from libcni.runtime import nodeprobe

PYCNI, GO, OTHER = "pycni", "Go", "other"

# Go writes its build ID near the start of every executable and its build info block
# ("\xff Go buildinf:") in a data section further in.
_GO_MARKS = (b"Go build ID:", b"\xff Go buildinf:")
_HEAD = 64 << 10
_MAX_SCAN = 256 << 20
_CHUNK = 1 << 20
VERSION_TIMEOUT = 10


# -- what a network runs ------------------------------------------------------------------


def ipam_types(netlist) -> dict:
    """{IPAM type: [its dataDir values]} of a network's plugins."""
    found: dict = {}
    for plugin in netlist.plugins:
        ipam = plugin.conf.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            data_dir = ipam.get("dataDir")
            found.setdefault(ipam["type"], [])
            if isinstance(data_dir, str) and data_dir:
                found[ipam["type"]].append(data_dir)
    return found


def plugin_types(netlist) -> list:
    """Every executable a network runs: each plugin's type and its delegated IPAM types."""
    return [p.type for p in netlist.plugins] + list(ipam_types(netlist))


def typed_roles(netlist) -> list:
    """[(type, "plugin" or "ipam")] of a network, each type once, in list order."""
    seen: dict = {}
    for plugin in netlist.plugins:
        seen.setdefault(plugin.type, "plugin")
    for ipam_type in ipam_types(netlist):
        seen.setdefault(ipam_type, "ipam")
    return list(seen.items())


def ask_version(path: str) -> tuple:
    """(supported versions, None) or (None, what went wrong), asked as podman asks."""
    from libcni.runtime.netlist import VERSION_PROBE_ENV, VERSION_PROBE_STDIN, decode_version_info

    env = {"PATH": nodeprobe.SBIN_PATH, **VERSION_PROBE_ENV}
    try:
        proc = subprocess.run(
            [path], input=VERSION_PROBE_STDIN, env=env, capture_output=True, timeout=VERSION_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer to VERSION within {VERSION_TIMEOUT} s"
    except OSError as err:
        return None, f"cannot be executed: {err.strerror}"
    if proc.returncode != 0:
        output = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        return None, f"VERSION failed (exit status {proc.returncode}): {output[:200]}"
    try:
        return decode_version_info(proc.stdout), None
    except CNIError as err:
        return None, err.msg


# -- where it resolves, and whose it is ---------------------------------------------------


@dataclass
class Resolved:
    """One plugin type of one network: where it resolves (path None: nowhere)."""

    network: str
    type: str
    role: str  # "plugin" or "ipam"
    path: str | None
    origin: str = ""  # PYCNI, GO, OTHER; "" when not found
    shadowed: str = ""  # a pycni copy in a later plugin dir that this one hides


def _contains(path: str, marks: tuple, limit: int) -> bool:
    """Whether any of `marks` occurs in the first `limit` bytes of the file."""
    keep = max(len(m) for m in marks) - 1
    tail = b""
    read = 0
    with open(path, "rb") as f:
        while read < limit:
            chunk = f.read(_CHUNK)
            if not chunk:
                return False
            block = tail + chunk
            if any(m in block for m in marks):
                return True
            tail = block[-keep:]
            read += len(chunk)
    return False


def origin(path: str) -> str:
    """PYCNI, GO or OTHER for the plugin file at `path` (OTHER when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
        if head.startswith(b"#!"):
            first = head[:4096]
            ours = (b"libcni", b"pycni", b"import multicall")  # build/srcbin.py's launchers
            return PYCNI if any(mark in first for mark in ours) else OTHER
        if not head.startswith(b"\x7fELF"):
            return OTHER
        directory = os.path.dirname(os.path.realpath(path))
        if b"pycni" in head and (
            os.path.isfile(os.path.join(directory, "_internal", "pycni"))
            or os.path.basename(directory) == "_internal"
        ):
            return PYCNI
        if any(m in head for m in _GO_MARKS) or _contains(path, _GO_MARKS, _MAX_SCAN):
            return GO
    except OSError:
        pass
    return OTHER


def find(plugin_dirs: list, plugin_type: str) -> list:
    """Every file called `plugin_type` in the plugin dirs, in search order (first one wins)."""
    return [
        os.path.join(d, plugin_type)
        for d in plugin_dirs
        if os.path.isfile(os.path.join(d, plugin_type))
    ]


def resolve(networks: list, plugin_dirs: list, types_of) -> list:
    """[Resolved] for every (network, plugin type) pair; `types_of(netlist)` gives a network's
    [(type, role)]. Origins are decided once per file."""
    origins: dict = {}

    def origin_of(path: str) -> str:
        if path not in origins:
            origins[path] = origin(path)
        return origins[path]

    found = []
    for netlist in networks:
        for plugin_type, role in types_of(netlist):
            paths = find(plugin_dirs, plugin_type)
            if not paths:
                found.append(Resolved(netlist.name, plugin_type, role, None))
                continue
            entry = Resolved(netlist.name, plugin_type, role, paths[0], origin_of(paths[0]))
            if entry.origin != PYCNI:
                later = [p for p in paths[1:] if origin_of(p) == PYCNI]
                entry.shadowed = later[0] if later else ""
            found.append(entry)
    return found


def daemon_program(resolved: list) -> str | None:
    """The pycni daemon installed beside the pycni plugins in use, if any."""
    for entry in resolved:
        if entry.origin == PYCNI and entry.path:
            directory = os.path.dirname(os.path.realpath(entry.path))
            for candidate in (
                os.path.join(directory, "_internal", "pycni-daemon"),
                os.path.join(directory, "pycni-daemon"),
            ):
                if os.path.isfile(candidate):
                    return candidate
    return None


def warnings(resolved: list) -> list:
    """[(problem, fix)]: networks that mix implementations, and pycni plugins hidden behind
    another implementation earlier in the plugin dirs."""
    by_network: dict = {}
    hidden: dict = {}
    for entry in resolved:
        if entry.path is None:
            continue  # the doctor's plugin check reports it
        by_network.setdefault(entry.network, {}).setdefault(entry.origin, []).append(entry)
        if entry.shadowed:
            key = (os.path.dirname(entry.path), entry.origin, os.path.dirname(entry.shadowed))
            hidden.setdefault(key, set()).add(entry.type)
    found = []
    for network, origins in by_network.items():
        if len(origins) < 2:
            continue
        parts = [
            f"{', '.join(e.type for e in entries)}: {who} "
            f"({', '.join(sorted({os.path.dirname(e.path) for e in entries}))})"
            for who, entries in sorted(origins.items())
        ]
        found.append(
            (
                f'network "{network}" mixes plugin implementations: {"; ".join(parts)}',
                "usually unintended (a plugin missing from one directory is found in the "
                "next): install the whole set from one place (pycni's package ships every "
                "standard plugin into /opt/cni/bin) or fix the plugin dir order; the on-disk "
                "state is shared, so the mix works, but each side's fixes and defaults differ",
            )
        )
    for (directory, who, pycni_dir), types in sorted(hidden.items()):
        found.append(
            (
                f"{', '.join(sorted(types))}: {who}'s copies in {directory} are used; pycni's "
                f"in {pycni_dir} come later in the plugin dirs and are not",
                f"list {pycni_dir} first (CNI_PATH, containerd's bin_dir, podman's "
                "cni_plugin_dirs), or remove the other copies if pycni is meant to serve",
            )
        )
    return found


def table(resolved: list) -> list:
    """Text lines: per network, each type with its directory and origin."""
    lines = []
    network = None
    width = max((len(e.type) for e in resolved), default=0) + 7
    for entry in resolved:
        if entry.network != network:
            network = entry.network
            lines.append(f"  network {network}:")
        name = entry.type + (" (ipam)" if entry.role == "ipam" else "")
        if entry.path is None:
            lines.append(f"    {name:{width}} not found")
            continue
        lines.append(f"    {name:{width}} {os.path.dirname(entry.path):20} {entry.origin}")
    return lines
