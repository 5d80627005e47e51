"""Every plugin folder has a README.md whose key table matches the plugin's config class.

The table under "## Configuration keys" lists each key the config class declares beyond the
keys every CNI config has (for IPAM plugins: the keys of the `ipam` object), with its type,
default and, for integers the decoder range-checks, that range, all as the decoder sees them
(libcni/protocol/config.py). A key added, removed, retyped or given another default in the code
without the page following fails here, naming the page and the key.
"""

import importlib
import json
import os
import re

import pytest
from conftest import REPO

from libcni.protocol import config

# Plugin folder -> (module, config class or None for "no keys of its own", keys inside `ipam`).
PAGES = {
    "plugins/loopback": ("plugins.loopback.loopback", None, False),
    "plugins/bridge": ("plugins.bridge.bridge", "BridgeConf", False),
    "plugins/ptp": ("plugins.ptp.ptp", "PtpConf", False),
    "plugins/macvlan": ("plugins.macvlan.macvlan", "MacvlanConf", False),
    "plugins/ipvlan": ("plugins.ipvlan.ipvlan", "IpvlanConf", False),
    "plugins/vlan": ("plugins.vlan.vlan", "VlanConf", False),
    "plugins/host_device": ("plugins.host_device.host_device", "HostDeviceConf", False),
    "plugins/tap": ("plugins.tap.tap", "TapConf", False),
    "plugins/dummy": ("plugins.dummy.dummy", None, False),
    "meta/portmap": ("meta.portmap.portmap", "PortMapConf", False),
    "meta/tuning": ("meta.tuning.tuning", "TuningConf", False),
    "meta/bandwidth": ("meta.bandwidth.bandwidth", "BandwidthConf", False),
    "meta/firewall": ("meta.firewall.firewall", "FirewallConf", False),
    "meta/sbr": ("meta.sbr.sbr", "SbrConf", False),
    "meta/vrf": ("meta.vrf.vrf", "VrfConf", False),
    "ipam/host_local": ("ipam.host_local.host_local", "IPAMConf", True),
    "ipam/static": ("ipam.static.static", "IPAMConf", True),
    "ipam/dhcp": ("ipam.dhcp.dhcp", "IPAMConf", True),
}
SECTIONS = (
    "## Configuration keys",
    "## Runtime capabilities and arguments",
    "## Example",
    "## State it leaves, and how DEL and GC find it",
    "## Differences from upstream",
)
COMMON_KEYS = set(config._fields(config.NetConf))
CHECKED_WORDS = {
    "LinkName": "string (interface name)",
    "Path": "string (path)",
    "IP": "string (IP address)",
}


def _unoptional(kind):
    members = getattr(kind, "__args__", None)
    if getattr(kind, "__origin__", None) is None and members and type(None) in members:
        return next(m for m in members if m is not type(None))
    return kind


def type_word(kind) -> str:
    """How a page names a field's type."""
    kind = _unoptional(kind)
    origin = getattr(kind, "__origin__", None)
    if isinstance(kind, type) and issubclass(kind, config._Checked):
        return CHECKED_WORDS[kind.__name__]
    if isinstance(kind, type) and issubclass(kind, config._Ranged):
        return "integer"
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if kind in simple:
        return simple[kind]
    if kind is list or origin is list:
        members = getattr(kind, "__args__", None)
        if not members:
            return "list"
        inner = members[0]
        if inner is str:
            return "list of strings"
        if inner is list or getattr(inner, "__origin__", None) is list:
            return "list of lists"
        return "list of objects"
    if kind is dict or origin is dict:
        return "object"
    if isinstance(kind, type) and issubclass(kind, config.Struct):
        return "object"
    return "any"


def default_word(value) -> str:
    return "none" if value is None else json.dumps(value)


def page_text(folder: str) -> str:
    path = os.path.join(REPO, folder, "README.md")
    assert os.path.isfile(path), f"{folder} has no README.md"
    with open(path) as f:
        return f.read()


def key_rows(text: str) -> dict:
    """{key: [type, default, range, meaning]} of the table under "## Configuration keys"."""
    section = text.split("## Configuration keys", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            cells = [cell.strip() for cell in match.group(2).split(" | ")]
            assert match.group(1) not in rows, f"{match.group(1)} listed twice"
            rows[match.group(1)] = cells
    return rows


def declared(folder: str) -> dict:
    """{key: (kind, default)} the plugin's config class declares, as the page must list them."""
    module_name, class_name, in_ipam = PAGES[folder]
    if class_name is None:
        return {}
    cls = getattr(importlib.import_module(module_name), class_name)
    fields = config._fields(cls)
    skip = {"type"} if in_ipam else COMMON_KEYS
    return {
        name: (kind, getattr(cls, name, None)) for name, kind in fields.items() if name not in skip
    }


def test_every_plugin_folder_has_a_page():
    folders = set()
    for group in ("plugins", "ipam", "meta"):
        for name in os.listdir(os.path.join(REPO, group)):
            if os.path.isfile(os.path.join(REPO, group, name, "__init__.py")):
                folders.add(f"{group}/{name}")
    assert folders == set(PAGES)
    assert len(PAGES) == 18


@pytest.mark.parametrize("folder", sorted(PAGES))
def test_the_page_has_every_section(folder):
    text = page_text(folder)
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions, [s for s in SECTIONS if s not in text]
    assert positions == sorted(positions)
    example = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert example, "no example"
    obj = json.loads(example.group(1))
    name = PAGES[folder][0].rsplit(".", 1)[1].replace("_", "-")
    types = [p["type"] for p in obj["plugins"]]
    types += [p["ipam"]["type"] for p in obj["plugins"] if "ipam" in p]
    assert name in types, f"the example does not use {name}"


@pytest.mark.parametrize("folder", sorted(PAGES))
def test_the_key_table_matches_the_config_class(folder):
    rows = key_rows(page_text(folder))
    keys = declared(folder)
    wanted = {name: expected_row(kind, default) for name, (kind, default) in keys.items()}
    missing = "\n".join(
        f"| `{name}` | {kind} | `{default}` | {rng} | ... |"
        for name, (kind, default, rng) in wanted.items()
        if name not in rows
    )
    assert sorted(rows) == sorted(keys), (
        f"{folder}/README.md lists {sorted(set(rows) - set(keys))} the code does not declare, "
        f"and misses {sorted(set(keys) - set(rows))}; rows to add:\n{missing}"
    )
    for name, (kind_word, default, rng) in wanted.items():
        kind_cell, default_cell, range_cell, meaning = rows[name]
        assert kind_cell == kind_word, f"{folder}: {name}: type {kind_cell!r}, want {kind_word!r}"
        assert default_cell.strip("`") == default, (
            f"{folder}: {name}: default {default_cell!r}, want `{default}`"
        )
        assert range_cell.startswith(rng.rstrip("—")), f"{folder}: {name}: range should start {rng}"
        assert range_cell and meaning, f"{folder}: {name} has an empty cell"


def expected_row(kind, default) -> tuple:
    """(type word, default word, range prefix: "LOW to HIGH" for range-checked integers)."""
    ranged = _unoptional(kind)
    checked = isinstance(ranged, type) and issubclass(ranged, config._Ranged)
    rng = f"{ranged.low} to {ranged.high}" if checked else "—"
    return type_word(kind), default_word(default), rng


def test_the_pages_are_linked_from_the_readme():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    assert "plugins/bridge/README.md" in text and "tests/packaging/test_plugin_pages.py" in text
