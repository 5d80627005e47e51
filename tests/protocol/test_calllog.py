"""Per-call logs (libcni.protocol.calllog): one JSON line per call, off unless configured.

Chains run through libcni's list functions on our executables (source and frozen), with the
pycni daemon and without; the node-wide defaults file is a scratch file named by PYCNI_CONFIG.
"""

import io
import json
import os

import pytest
from conftest import run_plugin

from libcni.protocol import calllog, skel
from libcni.runtime import conflist
from libcni.runtime.netlist import Runtime, RuntimeConf

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def read_lines(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def chain(log_keys: dict) -> conflist.NetworkList:
    plugins = [{"type": "loopback", **log_keys}, {"type": "tuning", **log_keys}]
    obj = {"cniVersion": "1.0.0", "name": "logged", "plugins": plugins}
    return conflist.list_from_bytes(json.dumps(obj).encode())


@pytest.fixture
def daemon_or_not(request, plugin_dir, start_daemon):
    """{} (each executable runs the call) or the env that sends calls to a private daemon."""
    if request.param == "exec":
        return "frozen" if plugin_dir.endswith("dist/bin") else "source", {}
    return "daemon", {"PYCNI_SOCKET": start_daemon(plugin_dir).socket}


@pytest.mark.parametrize("daemon_or_not", ["exec", "daemon"], indirect=True)
def test_a_chain_logs_one_line_per_plugin_call(plugin_dir, daemon_or_not, netns, tmp_path):
    path, env = daemon_or_not
    log = str(tmp_path / "calls.jsonl")
    runtime = Runtime(
        [plugin_dir], cache_dir=str(tmp_path / "cache"), environ={"PATH": PATH, **env}
    )
    netlist = chain({"logFile": log})
    rt = RuntimeConf(container_id="ctr-log", netns=netns, ifname="lo")
    runtime.add(netlist, rt)
    runtime.check(netlist, rt)
    runtime.delete(netlist, rt)
    lines = read_lines(log)
    assert [(line["verb"], line["plugin"]) for line in lines] == [
        ("ADD", "loopback"),
        ("ADD", "tuning"),
        ("CHECK", "loopback"),
        ("CHECK", "tuning"),
        ("DEL", "tuning"),
        ("DEL", "loopback"),
    ]
    for line in lines:
        assert line["network"] == "logged"
        assert (line["containerID"], line["ifname"], line["netns"]) == ("ctr-log", "lo", netns)
        assert line["path"] == path
        assert line["outcome"] == "ok" and "code" not in line
        assert 0 <= line["durationMs"] < 5000
        assert line["time"].endswith("Z") and "stdin" not in line


def test_off_by_default_writes_nothing_and_imports_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import sys

    sys.modules.pop("libcni.protocol.calllog", None)
    env = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "c",
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/x",
        "PYCNI_CONFIG": str(tmp_path / "absent.json"),
    }
    from plugins.loopback.loopback import PLUGIN

    code = skel.dispatch(
        PLUGIN, env, io.BytesIO(json.dumps(LOOPBACK).encode()), io.StringIO(), io.StringIO()
    )
    assert code == 0
    assert "libcni.protocol.calllog" not in sys.modules
    assert os.listdir(tmp_path) == []


def test_node_wide_file_and_debug_level(plugin_dir, netns, tmp_path):
    log = tmp_path / "node.jsonl"
    node = tmp_path / "pycni.json"
    node.write_text(json.dumps({"logFile": str(log), "logLevel": "debug"}))
    run = run_plugin(
        plugin_dir,
        "loopback",
        "ADD",
        LOOPBACK,
        netns=netns,
        ifname="lo",
        env={"PYCNI_CONFIG": str(node)},
    )
    assert run.returncode == 0, run
    (line,) = read_lines(log)
    assert line["stdin"] == LOOPBACK
    assert line["stdout"] == run.json


def test_a_failed_call_logs_code_and_msg_and_error_level_skips_successes(tmp_path, netns):
    log = str(tmp_path / "err.jsonl")
    from plugins.loopback.loopback import PLUGIN

    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/x",
        "CNI_NETNS": "/nonexistent/netns",
        "PYCNI_CONFIG": str(tmp_path / "absent"),
    }
    conf = dict(LOOPBACK, logFile=log, logLevel="error")
    out = io.StringIO()
    assert (
        skel.dispatch(PLUGIN, env, io.BytesIO(json.dumps(conf).encode()), out, io.StringIO()) == 1
    )
    ok_env = dict(env, CNI_NETNS=netns)
    assert (
        skel.dispatch(
            PLUGIN, ok_env, io.BytesIO(json.dumps(conf).encode()), io.StringIO(), io.StringIO()
        )
        == 0
    )
    (line,) = read_lines(log)
    error = json.loads(out.getvalue())
    assert line["outcome"] == "error"
    assert (line["code"], line["msg"]) == (error["code"], error["msg"])
    assert line["verb"] == "ADD" and line["netns"] == "/nonexistent/netns"


def test_config_keys_override_the_node_file(tmp_path):
    node = tmp_path / "pycni.json"
    node.write_text(json.dumps({"logFile": "/node.log", "logLevel": "debug", "logMaxSize": 5}))
    merged = calllog.settings({"logFile": "/conf.log"}, {"PYCNI_CONFIG": str(node)})
    assert merged == {"logFile": "/conf.log", "logLevel": "debug", "logMaxSize": 5}


def test_a_full_log_is_rotated_once(plugin_dir, netns, tmp_path):
    log = tmp_path / "small.jsonl"
    conf = dict(LOOPBACK, logFile=str(log), logMaxSize=600)
    for n in range(6):
        run = run_plugin(
            plugin_dir, "loopback", "CHECK" if n else "ADD", conf, netns=netns, ifname="lo"
        )
        assert run.returncode == 0, run
    rotated = tmp_path / "small.jsonl.1"
    assert rotated.exists() and os.path.getsize(log) <= 600 and os.path.getsize(rotated) <= 600
    assert sorted(os.listdir(tmp_path)) == ["small.jsonl", "small.jsonl.1"]
    lines = read_lines(rotated) + read_lines(log)
    # Every line is whole; the oldest ones went with the second rotation.
    assert lines[-1]["verb"] == "CHECK" and all(line["plugin"] == "loopback" for line in lines)
    assert len(lines) < 6


def test_an_unwritable_log_never_fails_the_call(plugin_dir, netns, tmp_path):
    conf = dict(LOOPBACK, logFile=str(tmp_path / "no-such-dir" / "calls.jsonl"))
    run = run_plugin(plugin_dir, "loopback", "ADD", conf, netns=netns, ifname="lo")
    assert run.returncode == 0, run
    assert run.json["interfaces"][0]["name"] == "lo"
    assert "call log" in run.stderr and "not written" in run.stderr
    # A directory in place of the file, and a node file that is not JSON: still fine.
    node = tmp_path / "pycni.json"
    node.write_text("{not json")
    conf = dict(LOOPBACK, logFile=str(tmp_path))
    run = run_plugin(
        plugin_dir,
        "loopback",
        "DEL",
        conf,
        netns=netns,
        ifname="lo",
        env={"PYCNI_CONFIG": str(node)},
    )
    assert run.returncode == 0 and run.stdout == "", run


def test_version_is_never_logged(tmp_path):
    node = tmp_path / "pycni.json"
    node.write_text(json.dumps({"logFile": str(tmp_path / "v.jsonl")}))
    from plugins.loopback.loopback import PLUGIN

    env = {"CNI_COMMAND": "VERSION", "PYCNI_CONFIG": str(node)}
    assert skel.dispatch(PLUGIN, env, io.BytesIO(b"{}"), io.StringIO(), io.StringIO()) == 0
    assert not (tmp_path / "v.jsonl").exists()
