"""`cnitool doctor`'s resolution report (issue #23): where each plugin type of each network
resolves, whose it is (pycni, Go, other), a warning for a list that mixes them, for pycni
plugins hidden behind earlier copies, and for a pycni daemon installed but not running; an
unknown is shown as unknown ("??"), never as "ok".

Scratch nodes only: conf dirs, plugin dirs and sockets in tmp_path. The pycni plugins are copies
of the frozen front door (with the build's _internal/ linked beside them) or the source
launchers; Go's are Debian's in /usr/lib/cni.
"""

import json
import os
import shutil
import socket

import pytest

from libcni.runtime import doctor, nodeprobe, resolution

SCRIPT_PLUGIN = """#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
    printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
fi
exit 0
"""


def pycni_dir(frozen_bin, directory, *names):
    """A plugin dir holding copies of pycni's front door under `names`, _internal/ beside."""
    os.makedirs(directory)
    os.symlink(os.path.join(frozen_bin, "_internal"), os.path.join(directory, "_internal"))
    for name in names:
        shutil.copy2(os.path.join(frozen_bin, name), os.path.join(directory, name))
    return str(directory)


def go_dir(go_bin, directory, *names):
    os.makedirs(directory)
    for name in names:
        shutil.copy2(os.path.join(go_bin, name), os.path.join(directory, name))
    return str(directory)


def node(tmp_path, plugin_dirs, *lists, **extra) -> doctor.Node:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir(exist_ok=True)
    for number, obj in enumerate(lists):
        (conf_dir / f"{10 + number}-{obj['name']}.conflist").write_text(json.dumps(obj))
    kernel = tmp_path / "kernel"
    (kernel / "sys").mkdir(parents=True, exist_ok=True)
    (kernel / "modules").write_text("")
    (kernel / "lib").mkdir(exist_ok=True)
    (kernel / "lib" / "modules.builtin").write_text(
        "kernel/net/bridge/bridge.ko\nkernel/net/sched/sch_tbf.ko\nkernel/drivers/net/ifb.ko\n"
        "kernel/net/sched/sch_ingress.ko\n"
    )
    settings = {
        "conf_dir": str(conf_dir),
        "plugin_dirs": plugin_dirs,
        "cache_dir": str(tmp_path / "cache"),
        "pycni_socket": str(tmp_path / "pycni.sock"),
        "dhcp_socket": str(tmp_path / "dhcp.sock"),
        "tool_path": "/usr/sbin:/usr/bin:/sbin:/bin",
        "modules": nodeprobe.Modules(
            str(kernel / "modules"), str(kernel / "sys"), str(kernel / "lib")
        ),
        "probe_kernel": False,
    }
    settings.update(extra)
    return doctor.Node(**settings)


def pod_list(name="pods"):
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def where(report) -> list:
    return [
        (r.network, r.type, r.role, r.path and os.path.dirname(r.path), r.origin)
        for r in report.resolved
    ]


def warnings(report) -> list:
    return [f.problem for f in report.findings if f.check == "plugin" and f.severity == "warning"]


def test_origin_of_each_kind_of_plugin(frozen_bin, source_bin, go_bin, tmp_path):
    script = tmp_path / "vendor-plugin"
    script.write_text(SCRIPT_PLUGIN)
    assert resolution.origin(os.path.join(frozen_bin, "bridge")) == resolution.PYCNI
    assert resolution.origin(os.path.join(source_bin, "bridge")) == resolution.PYCNI
    assert resolution.origin(os.path.join(go_bin, "bridge")) == resolution.GO
    assert resolution.origin(str(script)) == resolution.OTHER
    assert resolution.origin("/bin/sh") == resolution.OTHER
    assert resolution.origin(str(tmp_path / "missing")) == resolution.OTHER


def test_every_type_shows_its_directory_and_origin(frozen_bin, tmp_path):
    ours = pycni_dir(frozen_bin, tmp_path / "opt", "bridge", "host-local", "portmap")
    report = doctor.examine(node(tmp_path, [ours, "/usr/lib/cni"], pod_list()))
    assert where(report) == [
        ("pods", "bridge", "plugin", ours, "pycni"),
        ("pods", "portmap", "plugin", ours, "pycni"),
        ("pods", "host-local", "ipam", ours, "pycni"),
    ]
    assert warnings(report) == []
    text = doctor.as_text(report)
    assert f"plugins (the first match in {ours}:/usr/lib/cni; pycni, Go or other):" in text
    assert "    host-local (ipam)" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["bridge", ours, "pycni"] in lines
    assert doctor.as_json(report)["resolution"][0]["origin"] == "pycni"


def test_without_opt_cni_bin_every_plugin_is_shown_as_gos(go_bin, tmp_path):
    # The node: /opt/cni/bin absent, everything resolved to Debian's Go plugins.
    missing = str(tmp_path / "opt-cni-bin-absent")
    report = doctor.examine(node(tmp_path, [missing, go_bin], pod_list()))
    assert {(r.path and os.path.dirname(r.path), r.origin) for r in report.resolved} == {
        (go_bin, "Go")
    }
    text = doctor.as_text(report)
    assert ["portmap", go_bin, "Go"] in [line.split() for line in text.splitlines()]


def test_a_list_that_mixes_implementations_is_warned_about(frozen_bin, go_bin, tmp_path):
    ours = pycni_dir(frozen_bin, tmp_path / "opt", "bridge", "host-local")  # no portmap
    report = doctor.examine(node(tmp_path, [ours, go_bin], pod_list()))
    assert ("pods", "portmap", "plugin", go_bin, "Go") in where(report)
    [problem] = warnings(report)
    assert problem.startswith('network "pods" mixes plugin implementations: ')
    assert f"portmap: Go ({go_bin})" in problem
    assert f"bridge, host-local: pycni ({ours})" in problem


def test_pycni_plugins_hidden_behind_earlier_copies(frozen_bin, go_bin, tmp_path):
    ours = pycni_dir(frozen_bin, tmp_path / "opt", "bridge", "host-local", "portmap")
    report = doctor.examine(node(tmp_path, [go_bin, ours], pod_list()))
    assert {r.origin for r in report.resolved} == {"Go"}
    [problem] = warnings(report)
    assert problem == (
        f"bridge, host-local, portmap: Go's copies in {go_bin} are used; pycni's in {ours} "
        "come later in the plugin dirs and are not"
    )


def test_a_missing_type_is_shown_as_not_found(tmp_path, go_bin):
    obj = pod_list()
    obj["plugins"].append({"type": "portmapp"})
    report = doctor.examine(node(tmp_path, [go_bin], obj))
    assert ("pods", "portmapp", "plugin", None, "") in where(report)
    assert "portmapp" in doctor.as_text(report).split("not found")[0].splitlines()[-1]


def test_the_daemon_installed_but_not_running(frozen_bin, tmp_path):
    ours = pycni_dir(frozen_bin, tmp_path / "opt", "loopback")
    lo = {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}
    report = doctor.examine(node(tmp_path, [ours], lo))
    [finding] = report.findings
    assert (finding.check, finding.severity) == ("daemon", "warning")
    assert "pycni-daemon" in finding.problem and "pycni.sock" in finding.problem
    assert "pycni.socket" in finding.fix
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(tmp_path / "pycni.sock"))
        listener.listen(1)
        report = doctor.examine(node(tmp_path, [ours], lo))
        assert report.findings == []
        assert any(fact.startswith("pycni daemon: reachable") for fact in report.facts)
    finally:
        listener.close()


def test_go_plugins_alone_need_no_daemon(go_bin, tmp_path):
    lo = {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}
    report = doctor.examine(node(tmp_path, [go_bin], lo))
    assert report.findings == []


@pytest.mark.parametrize("want_json", [False, True])
def test_an_unknown_is_never_ok(go_bin, tmp_path, want_json):
    lo = {"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}
    bw = {"cniVersion": "1.0.0", "name": "bw", "plugins": [{"type": "bandwidth"}]}
    # No module lists at all and no probe: whether ifb is there cannot be told.
    modules = nodeprobe.Modules("/nonexistent", "/nonexistent", "/nonexistent")
    report = doctor.examine(node(tmp_path, [go_bin], lo, bw, modules=modules))
    assert report.findings == [] and report.ok
    assert any("ifb" in unknown for unknown in report.unknowns)
    if want_json:
        obj = doctor.as_json(report)
        assert obj["unknowns"] == report.unknowns
        assert not any("could not tell" in fact for fact in obj["facts"])
        return
    text = doctor.as_text(report)
    for line in text.splitlines():
        if "could not tell" in line:
            assert line.startswith("??      kernel: could not tell whether")
    assert not any(line.startswith("ok") and "could not" in line for line in text.splitlines())
    assert text.splitlines()[-1].startswith("nothing wrong found, ")
    assert text.splitlines()[-1].endswith(" unknown (not checked)")
    assert "all well" not in text
