"""`cnitool doctor` (libcni/runtime/doctor.py): one test per finding, each on a scratch node
(conf dir, plugin dir, cache dir, sockets and kernel module lists in tmp_path), and a clean
node that reports nothing. Nothing of the machine's own /etc/cni, /opt/cni or /var/lib/cni
is read, except by the last test, which only runs the frozen cnitool on scratch dirs.
"""

import io
import json
import os
import socket
import subprocess

import pytest
from kit import require

from libcni.runtime import cache, cnitool, doctor, nodeprobe
from libcni.runtime.netlist import RuntimeConf

FAKE_PLUGIN = """#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
    printf '{"cniVersion":"1.1.0","supportedVersions":[%s]}' '{versions}'
    exit 0
fi
exit 0
"""
ALL = '"0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"'


class ScratchNode:
    def __init__(self, root):
        self.root = root
        self.conf_dir = root / "net.d"
        self.bin = root / "bin"
        self.cache_dir = root / "cache"
        self.kernel = root / "kernel"
        self.tools = root / "tools"
        for d in (self.conf_dir, self.bin, self.cache_dir, self.kernel / "sys", self.tools):
            d.mkdir(parents=True)
        (self.kernel / "modules").write_text("")
        (self.kernel / "lib").mkdir()
        (self.kernel / "lib" / "modules.builtin").write_text("kernel/net/bridge/bridge.ko\n")
        self.plugin("loopback")

    def plugin(self, name, versions=ALL, script=None):
        path = self.bin / name
        path.write_text(script or FAKE_PLUGIN.replace("{versions}", versions))
        path.chmod(0o755)

    def tool(self, name):
        path = self.tools / name
        path.write_text(f"#!/bin/sh\necho '{name} v1.0 (fake)'\n")
        path.chmod(0o755)

    def network(self, filename, obj):
        text = obj if isinstance(obj, str) else json.dumps(obj)
        (self.conf_dir / filename).write_text(text)

    def node(self, **extra) -> doctor.Node:
        settings = {
            "conf_dir": str(self.conf_dir),
            "plugin_dirs": [str(self.bin)],
            "cache_dir": str(self.cache_dir),
            "pycni_socket": str(self.root / "pycni.sock"),
            "dhcp_socket": str(self.root / "dhcp.sock"),
            "tool_path": str(self.tools),
            "modules": nodeprobe.Modules(
                str(self.kernel / "modules"), str(self.kernel / "sys"), str(self.kernel / "lib")
            ),
            "probe_kernel": False,
        }
        settings.update(extra)
        return doctor.Node(**settings)

    def findings(self, **extra) -> list:
        return doctor.examine(self.node(**extra)).findings


def lo_list(name="lo-net", version="1.0.0", **plugin):
    return {"cniVersion": version, "name": name, "plugins": [{"type": "loopback", **plugin}]}


@pytest.fixture
def scratch(tmp_path):
    return ScratchNode(tmp_path)


def only(findings, check):
    assert [f.check for f in findings] == [check], findings
    return findings[0]


def test_a_clean_node_reports_nothing_and_exits_0(scratch):
    scratch.network("10-lo.conflist", lo_list())
    report = doctor.examine(scratch.node())
    assert report.findings == [] and report.ok
    assert [n.name for n in report.networks] == ["lo-net"]
    assert doctor.as_text(report).endswith("all well\n")


def test_no_config_says_why_the_node_is_not_ready(scratch):
    finding = only(scratch.findings(), "config")
    assert "NotReady" in finding.problem and str(scratch.conf_dir) in finding.problem
    missing = scratch.findings(conf_dir=str(scratch.root / "absent"))
    assert "does not exist" in only(missing, "config").problem


def test_a_conflist_that_does_not_parse(scratch):
    scratch.network("10-lo.conflist", lo_list())
    scratch.network("20-bad.conflist", '{"name": "x", "plugins": [')
    finding = only(scratch.findings(), "config")
    assert "20-bad.conflist" in finding.problem and "not valid JSON" in finding.problem


def test_a_conflist_without_a_name(scratch):
    scratch.network("10-lo.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "loopback"}]})
    finding = only(scratch.findings(), "config")
    assert 'missing "name"' in finding.problem and '"name"' in finding.fix


def test_a_plugin_type_missing_from_every_plugin_dir(scratch):
    plugins = [{"type": "loopback"}, {"type": "nosuch", "ipam": {"type": "nosuch-ipam"}}]
    scratch.network("10-x.conflist", {"cniVersion": "1.0.0", "name": "x", "plugins": plugins})
    findings = scratch.findings(plugin_dirs=[str(scratch.bin), str(scratch.root / "other")])
    assert [f.check for f in findings] == ["plugin", "plugin"]
    assert '"nosuch"' in findings[0].problem and '"nosuch-ipam"' in findings[1].problem
    assert str(scratch.root / "other") in findings[0].problem


def test_a_cni_version_a_plugin_does_not_support(scratch):
    scratch.plugin("picky", versions='"0.4.0","1.0.0"')
    lst = {"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "picky"}]}
    scratch.network("10-old.conflist", lst)
    finding = only(scratch.findings(), "version")
    assert '"0.3.1"' in finding.problem and "0.4.0, 1.0.0" in finding.problem


def test_a_plugin_that_fails_version(scratch):
    scratch.plugin("broken", script='#!/bin/sh\necho \'{"code":999,"msg":"boom"}\'\nexit 1\n')
    scratch.network(
        "10-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "broken"}]}
    )
    assert "VERSION failed" in only(scratch.findings(), "version").problem


@pytest.mark.parametrize(
    "plugin_type, module",
    [
        ("vlan", "8021q"),
        ("ipvlan", "ipvlan"),
        ("vrf", "vrf"),
        ("dummy", "dummy"),
        ("bandwidth", "ifb"),
    ],
)
def test_a_kernel_feature_the_plugin_needs_and_the_kernel_lacks(scratch, plugin_type, module):
    scratch.plugin(plugin_type)
    scratch.network(
        "10-k.conflist", {"cniVersion": "1.0.0", "name": "k", "plugins": [{"type": plugin_type}]}
    )
    findings = [f for f in scratch.findings() if module in f.problem]
    assert [f.check for f in findings] == ["kernel"]
    assert f"modprobe {module}" in findings[0].fix
    # Loaded, built in or loadable: no finding.
    (scratch.kernel / "lib" / "modules.dep").write_text(
        f"kernel/x/{module}.ko.xz:\nkernel/net/sched/sch_tbf.ko:\nkernel/net/sched/sch_ingress.ko:\n"
    )
    assert scratch.findings() == []


def test_bandwidth_needs_tbf_too(scratch):
    scratch.plugin("bandwidth")
    scratch.network(
        "10-k.conflist", {"cniVersion": "1.0.0", "name": "k", "plugins": [{"type": "bandwidth"}]}
    )
    (scratch.kernel / "modules").write_text("ifb 16384 0 - Live 0x0\nsch_ingress 1 0 - Live\n")
    finding = only(scratch.findings(), "kernel")
    assert "sch_tbf" in finding.problem and "CONFIG_NET_SCH_TBF" in finding.fix


def test_the_kernel_probe_runs_in_a_scratch_netns_and_leaves_none(scratch):
    require(os.geteuid() == 0, "the kernel probe needs root")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    answers = nodeprobe.kernel_features(
        ["bridge"], nodeprobe.Modules("/nonexistent", "/x", "/y"), probe=True
    )
    assert answers == [("bridge", "bridge", True)]
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == before


def test_which_netfilter_backend_is_usable(scratch):
    scratch.plugin("portmap")
    lst = {
        "cniVersion": "1.0.0",
        "name": "pm",
        "plugins": [{"type": "loopback"}, {"type": "portmap", "backend": "nftables"}],
    }
    scratch.network("10-pm.conflist", lst)
    finding = only(scratch.findings(), "netfilter")
    assert "nft" in finding.problem
    scratch.tool("iptables")
    scratch.tool("iptables-restore")
    assert "nft" in only(scratch.findings(), "netfilter").problem
    scratch.tool("nft")
    report = doctor.examine(scratch.node())
    assert report.findings == []
    assert any("iptables (iptables v1.0 (fake))" in fact for fact in report.facts)


def test_daemon_sockets(scratch, tmp_path):
    lst = lo_list("d", ipam={"type": "dhcp"})
    scratch.plugin("dhcp")
    scratch.network("10-d.conflist", lst)
    finding = only(scratch.findings(), "daemon")
    assert "dhcp" in finding.problem and "absent" in finding.problem
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(tmp_path / "dhcp.sock"))
        listener.listen(4)
        stale.bind(str(tmp_path / "pycni.sock"))
        stale.close()  # the file stays, nobody answers: a stale socket
        finding = only(scratch.findings(), "daemon")
        assert "pycni.sock" in finding.problem and finding.severity == "warning"
        os.unlink(tmp_path / "pycni.sock")
        report = doctor.examine(scratch.node())
        assert report.findings == []
        assert any(fact.startswith("dhcp daemon: reachable") for fact in report.facts)
    finally:
        listener.close()


def cache_attachment(scratch, network, container_id, netns, ifname="eth0"):
    rt = RuntimeConf(container_id=container_id, netns=netns, ifname=ifname)
    cache.write(str(scratch.cache_dir), network, rt, b"{}", {"cniVersion": "1.0.0"})


def test_stale_cache_entries_whose_netns_is_gone(scratch, netns):
    scratch.network("10-lo.conflist", lo_list())
    cache_attachment(scratch, "lo-net", "alive", netns)
    cache_attachment(scratch, "lo-net", "gone", "/var/run/netns/pycni-doctor-never-made")
    finding = only(scratch.findings(), "cache")
    assert "container gone" in finding.problem and "netns" in finding.problem
    assert "cnitool del lo-net --container-id gone" in finding.fix


def test_reservations_no_cached_attachment_owns(scratch, netns):
    data_dir = scratch.root / "ipam-data"
    lst = lo_list(ipam={"type": "host-local", "dataDir": str(data_dir)})
    scratch.plugin("host-local")
    scratch.network("10-lo.conflist", lst)
    cache_attachment(scratch, "lo-net", "owner", netns)
    store = data_dir / "lo-net"
    store.mkdir(parents=True)
    (store / "10.1.0.2").write_text("owner\r\neth0")
    (store / "10.1.0.3").write_text("leaked\r\neth0")
    (store / "last_reserved_ip.0").write_text("10.1.0.3")
    (store / "lock").write_text("")
    finding = only(scratch.findings(), "reservation")
    assert "10.1.0.3" in finding.problem and "leaked" in finding.problem
    assert f"rm {store / '10.1.0.3'}" in finding.fix
    # The default data dir is <cache dir>/networks, as /var/lib/cni/networks is.
    default = scratch.cache_dir / "networks" / "other"
    default.mkdir(parents=True)
    (default / "fd00::5").write_text("ghost")
    problems = [f.problem for f in scratch.findings()]
    assert len(problems) == 2 and any('fd00::5 on network "other"' in p for p in problems)


def test_cnitool_doctor_json_and_exit_status(scratch, tmp_path):
    argv = [
        "doctor",
        "--json",
        "--conf-dir",
        str(scratch.conf_dir),
        "--plugin-dir",
        str(scratch.bin),
        "--cache-dir",
        str(scratch.cache_dir),
        "--pycni-socket",
        str(tmp_path / "p.sock"),
        "--dhcp-socket",
        str(tmp_path / "d.sock"),
    ]
    out = io.StringIO()
    assert cnitool.run(argv, {"PATH": os.environ["PATH"]}, out, io.StringIO()) == 1
    report = json.loads(out.getvalue())
    assert report["ok"] is False and report["findings"][0]["check"] == "config"
    scratch.network("10-lo.conflist", lo_list())
    out = io.StringIO()
    assert cnitool.run(argv, {"PATH": os.environ["PATH"]}, out, io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert report["ok"] is True and report["findings"] == []
    assert report["networks"] == ["lo-net"] and report["pluginDirs"] == [str(scratch.bin)]


def test_frozen_cnitool_doctor_reads_netconfpath_and_cni_path(frozen_bin, scratch, tmp_path):
    scratch.network("10-lo.conflist", lo_list())
    env = {"PATH": os.environ["PATH"], "NETCONFPATH": str(scratch.conf_dir), "CNI_PATH": frozen_bin}
    argv = [
        os.path.join(frozen_bin, "cnitool"),
        "doctor",
        "--cache-dir",
        str(scratch.cache_dir),
        "--pycni-socket",
        str(tmp_path / "p.sock"),
        "--dhcp-socket",
        str(tmp_path / "d"),
    ]
    # The frozen build has its daemon beside it: one must answer on the socket, or the doctor
    # warns that it is installed but not running (tests/runtime/test_doctor_resolution.py).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(tmp_path / "p.sock"))
        listener.listen(4)
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"conf dir {scratch.conf_dir}, plugin dirs {frozen_bin}" in proc.stdout
    assert proc.stdout.endswith("all well\n")
