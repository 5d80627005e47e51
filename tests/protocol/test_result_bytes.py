"""Differential test of result bytes: every plugin that prints a result, for every cniVersion
Go 1.1.1 (/usr/lib/cni) speaks, against our frozen executables, byte for byte (the source
launchers print through the same code; one side is enough on a 2-core machine).

We print what upstream's current types print (containernetworking/cni pkg/types/020, 040,
100 at their newest). Go 1.1.1 was built on older types; `current_types` turns its bytes into
what the current types print, and each rule there names one place where 1.1.1 differs:

1. 1.0.0 results: current types/100 marshals the Result struct, decodes it into a map and
   marshals that (Result.MarshalJSON, 2023), so keys come out alphabetically at every level and
   an empty `dns` is dropped. 1.1.1 prints struct field order and always `"dns": {}`.
2. loopback for a 0.x config: 1.1.1 prints its 1.0.0-shaped result relabelled with the
   config's version (no `ips[].version` in 0.3.x/0.4.0, `interfaces`/`ips` instead of
   `ip4`/`ip6` in 0.1.0/0.2.0); the current types convert it (types/100 convertTo04x and
   convertTo02x), so `version` is printed, as for every other plugin.
3. Not exercised here because 1.1.1 cannot carry them at all: route `mtu`, `advmss`,
   `priority` (types, 2023-11), `table`, `scope` and interface `mtu`, `socketPath`, `pciID`
   (2024) are dropped by 1.1.1 and printed by the current types (test_result.py covers them);
   1.1.0 exists only in ours.

Random parts (MACs, veth names, netns paths) are replaced by placeholders on both sides first.
"""

import json
import re

import pytest
from conftest import GO_BIN, ns_exec, run_plugin

pytestmark = pytest.mark.oracle

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
FAMILY_A, FAMILY_C = ("0.1.0", "0.2.0"), ("1.0.0", "1.1.0")
MAC = re.compile(r'"([0-9a-f]{2}:){5}[0-9a-f]{2}"')
VETH = re.compile(r'"veth[0-9a-f]{8}"')


def indent(obj, sort_keys=False) -> str:
    """Go's json.MarshalIndent(obj, "", "    ") for the ASCII values of these results."""
    return json.dumps(obj, indent=4, sort_keys=sort_keys)


def current_types(go_text: str, version: str, plugin: str) -> str:
    """The bytes current upstream types print for the result Go 1.1.1 printed (see above)."""
    obj = json.loads(go_text)
    if plugin == "loopback" and version not in FAMILY_C:  # difference 2
        ips = obj.pop("ips", [])
        obj.pop("interfaces", None)
        if version in FAMILY_A:
            out = {"cniVersion": version}
            for ip in ips:
                key = "ip6" if ":" in ip["address"] else "ip4"
                out.setdefault(key, {"ip": ip["address"]})
            return indent(dict(out, dns=obj.get("dns", {})))
        obj = json.loads(go_text)
        obj["ips"] = [{"version": "6" if ":" in ip["address"] else "4", **ip} for ip in obj["ips"]]
        return indent(obj)
    if version in FAMILY_C:  # difference 1
        if not obj.get("dns"):
            obj.pop("dns", None)
        return indent(obj, sort_keys=True)
    return go_text


def placeholders(text: str, *paths: str) -> str:
    text = VETH.sub('"VETH"', MAC.sub('"MAC"', text))
    for path in paths:
        text = text.replace(path, "/NETNS")
    return text


# -- prevResults for the chained plugins, in each family's own shape ------------------------

DNS = {
    "nameservers": ["10.1.0.53"],
    "domain": "cluster.local",
    "search": ["svc.cluster.local"],
    "options": ["ndots:5"],
}


def prev_result(version: str, sandbox: str, dns: bool) -> dict:
    if version in FAMILY_A:
        out = {
            "cniVersion": version,
            "ip4": {
                "ip": "10.1.0.5/24",
                "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}],
            },
            "ip6": {"ip": "fd01::5/64", "gateway": "fd01::1"},
        }
        return dict(out, dns=DNS) if dns else out
    ips = [
        {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"interface": 2, "address": "fd01::5/64", "gateway": "fd01::1"},
    ]
    if version not in FAMILY_C:
        ips = [{"version": "6" if ":" in ip["address"] else "4", **ip} for ip in ips]
    out = {
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "0a:58:0a:01:00:01"},
            {"name": "veth0a1b2c3d", "mac": "0a:58:0a:01:00:02"},
            {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": sandbox},
        ],
        "ips": ips,
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}],
    }
    return dict(out, dns=DNS) if dns else out


# -- the side-by-side runs -----------------------------------------------------------------


class Side:
    """One plugin directory's own namespaces: a "host" netns to run in and a pod."""

    def __init__(self, make_netns, plugin_dir: str, data_dir: str):
        self.plugin_dir = plugin_dir
        self.data_dir = data_dir
        self.host = make_netns("rbh")
        self.pod = make_netns("rbp")
        ns_exec(self.host, "ip", "link", "set", "lo", "up")
        ns_exec(self.host, "ip", "link", "add", "mst0", "type", "veth", "peer", "mst1")
        ns_exec(self.host, "ip", "link", "set", "mst0", "up")
        ns_exec(self.pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "eth1")

    def run(self, plugin: str, command: str, conf: dict, ifname="eth0"):
        cni_path = f"{self.plugin_dir}:{GO_BIN}"
        return run_plugin(
            self.plugin_dir,
            plugin,
            command,
            conf,
            netns=self.pod,
            ifname=ifname,
            cni_path=cni_path,
            in_netns=self.host,
        )


def compare(make_netns, tmp_path, go_bin, plugin_dir, plugin, version, make_conf, ifname="eth0"):
    go = Side(make_netns, go_bin, str(tmp_path / "go"))
    ours = Side(make_netns, plugin_dir, str(tmp_path / "ours"))
    printed = {}
    for name, side in (("go", go), ("ours", ours)):
        conf = make_conf(side, version)
        done = side.run(plugin, "ADD", conf, ifname)
        assert done.returncode == 0, (name, done)
        printed[name] = placeholders(done.stdout, side.pod)
        side.run(plugin, "DEL", conf, ifname)
    assert printed["ours"] == current_types(printed["go"], version, plugin)


def ipam(side: Side, version: str) -> dict:
    return {
        "type": "host-local",
        "dataDir": side.data_dir,
        "ranges": [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}], [{"subnet": "fd77::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.99.0.0/16", "gw": "10.77.0.254"}],
    }


MAIN = {
    "loopback": lambda side, v: {"cniVersion": v, "name": "rb", "type": "loopback"},
    "bridge": lambda side, v: {
        "cniVersion": v,
        "name": "rb",
        "type": "bridge",
        "bridge": "rb0",
        "isGateway": True,
        "ipam": ipam(side, v),
    },
    "ptp": lambda side, v: {"cniVersion": v, "name": "rb", "type": "ptp", "ipam": ipam(side, v)},
    "macvlan": lambda side, v: {
        "cniVersion": v,
        "name": "rb",
        "type": "macvlan",
        "master": "mst0",
        "ipam": ipam(side, v),
    },
    "host-local": lambda side, v: {
        "cniVersion": v,
        "name": "rb",
        "type": "host-local",
        "ipam": ipam(side, v),
    },
    "static": lambda side, v: {
        "cniVersion": v,
        "name": "rb",
        "type": "static",
        "ipam": {
            "type": "static",
            "addresses": [
                {"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
                {"address": "fd00::5/64"},
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd01::/64", "gw": "fd00::1"}],
            "dns": DNS,
        },
    },
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("plugin", sorted(MAIN))
def test_main_and_ipam_results_are_upstreams_bytes(
    make_netns, tmp_path, go_bin, frozen_bin, plugin, version
):
    ifname = "lo" if plugin == "loopback" else "eth9"
    compare(make_netns, tmp_path, go_bin, frozen_bin, plugin, version, MAIN[plugin], ifname)


CHAINED = {
    "portmap": ({"capabilities": {"portMappings": True}}, VERSIONS),
    "bandwidth": ({}, VERSIONS[2:]),
    "tuning": ({"sysctl": {}}, VERSIONS),
    "firewall": ({"backend": "iptables"}, VERSIONS[4:]),
}


@pytest.mark.parametrize("dns", [True, False], ids=["dns", "no-dns"])
@pytest.mark.parametrize(
    "plugin, version",
    [(plugin, version) for plugin in sorted(CHAINED) for version in CHAINED[plugin][1]],
)
def test_chained_results_are_upstreams_bytes(
    make_netns, tmp_path, go_bin, frozen_bin, plugin, version, dns
):
    def make_conf(side, v):
        # dataDir: tuning's backups and firewall's records stay in the test's directory.
        return dict(
            CHAINED[plugin][0],
            cniVersion=v,
            name="rb",
            type=plugin,
            dataDir=side.data_dir,
            prevResult=prev_result(v, side.pod, dns),
        )

    compare(make_netns, tmp_path, go_bin, frozen_bin, plugin, version, make_conf)
