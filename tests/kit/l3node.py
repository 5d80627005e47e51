"""A routed test node for the veth plugins (bridge, ptp): a "host" netns where the plugin runs,
an "external" netns behind it, and pod namespaces.

`external` is joined to `host` by a veth (host 192.168.200.1/24, external .2/24) and has no
route back to any pod subnet: a pod reaches it only when the host masquerades, which makes
"ping external" a direct test of ipMasq.
"""

import json
import os

from kit.netns import ip_json, ns_exec
from kit.plugins import GO_BIN, run_plugin
from kit.pods import addresses, link, pings  # noqa: F401 - the node's tests import them here

EXTERNAL_HOST_SIDE = "192.168.200.1"
EXTERNAL = "192.168.200.2"


class Node:
    def __init__(self, make_netns, tmp_path, plugin: str):
        self.make_netns = make_netns
        self.plugin = plugin
        self.data_dir = str(tmp_path / "ipam")
        self.host = make_netns("l3h")
        self.external = make_netns("l3x")
        ext = os.path.basename(self.external)
        ns_exec(self.host, "ip", "link", "set", "lo", "up")
        ns_exec(
            self.host, "ip", "link", "add", "ext0", "type", "veth", "peer", "ext1", "netns", ext
        )
        ns_exec(self.host, "ip", "addr", "add", f"{EXTERNAL_HOST_SIDE}/24", "dev", "ext0")
        ns_exec(self.host, "ip", "link", "set", "ext0", "up")
        ns_exec(self.external, "ip", "addr", "add", f"{EXTERNAL}/24", "dev", "ext1")
        ns_exec(self.external, "ip", "link", "set", "ext1", "up")
        ns_exec(self.external, "ip", "link", "set", "lo", "up")

    def pod(self) -> str:
        return self.make_netns("l3p")

    def host_local(self, *subnets, routes=None) -> dict:
        ipam = {
            "type": "host-local",
            "dataDir": self.data_dir,
            "ranges": [[{"subnet": subnet}] for subnet in subnets],
        }
        if routes is not None:
            ipam["routes"] = routes
        return ipam

    def run(self, plugin_dir, command, config, *, pod="", cid="ctr1", **kw):
        cni_path = ":".join(p for p in (plugin_dir, GO_BIN) if p)
        return run_plugin(
            plugin_dir,
            self.plugin,
            command,
            config,
            netns=pod,
            container_id=cid,
            cni_path=cni_path,
            in_netns=self.host,
            **kw,
        )

    def add(self, plugin_dir, config, pod, cid="ctr1", **kw) -> dict:
        done = self.run(plugin_dir, "ADD", config, pod=pod, cid=cid, **kw)
        assert done.returncode == 0, done
        return done.json

    def reservations(self, network: str) -> list:
        folder = os.path.join(self.data_dir, network)
        if not os.path.isdir(folder):
            return []
        skip = ("lock",)
        return sorted(f for f in os.listdir(folder) if f not in skip and "last_reserved" not in f)

    def nat_rules(self) -> str:
        """Every CNI-related line of the host's nat tables (both families) and nft masquerade."""
        lines = []
        for tool in ("iptables-save", "ip6tables-save"):
            out = ns_exec(self.host, tool, "-t", "nat")
            lines += [line for line in out.splitlines() if "CNI-" in line]
        out = ns_exec(self.host, "nft", "list", "ruleset")
        lines += [line.strip() for line in out.splitlines() if "masquerade comment" in line]
        return "\n".join(lines)

    def host_veths(self) -> list:
        return [
            e["ifname"]
            for e in ip_json(self.host, "link", "show", "type", "veth")
            if e["ifname"] != "ext0"
        ]


def with_prev(config: dict, result: dict) -> dict:
    return dict(config, prevResult=result)


def shape(result: dict) -> dict:
    """A result with the random parts (names, MACs, sandboxes) blanked, for differential tests."""
    text = json.dumps(result, sort_keys=True)
    out = json.loads(text)
    for entry in out.get("interfaces", []):
        for key in ("mac", "sandbox"):
            if key in entry:
                entry[key] = "*"
        if entry["name"].startswith("veth"):
            entry["name"] = "veth*"
    return out
