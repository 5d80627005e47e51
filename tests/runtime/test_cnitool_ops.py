"""cnitool as an operator uses it (issue #23): a missing plugin never strands a pod, check and
del reuse the cached capability arguments, per-command help, exit statuses that say what
happened, and --exec / CNITOOL_EXEC to run plugins as a runtime does.

Fake plugins (tests/kit/recording_plugin.py) show exactly what reached each plugin; loopback runs
in a namespace the test owns; the exec tests use the frozen build's per-call log, whose `pid`
tells a plugin run inside cnitool's process from one it exec'd.
"""

import json
import os
import subprocess

import pytest
from conftest import ip_json
from kit import recording_plugin
from kit.cnitool import PATH

from libcni.runtime import cli, doctor
from libcni.runtime.cli import container_id_for

PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def calls(log) -> list:
    return [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in recording_plugin.read_log(log)]


def cache_file(cache_dir, network, netns_path, ifname="eth0") -> str:
    return os.path.join(cache_dir, "results", f"{network}-{container_id_for(netns_path)}-{ifname}")


def listed(name, *plugins, version="1.0.0") -> dict:
    return {"cniVersion": version, "name": name, "plugins": list(plugins)}


# -- a plugin that does not exist -----------------------------------------------------------


def test_add_runs_nothing_when_a_plugin_of_the_list_is_missing(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    netconf("10-net.conflist", listed("net", {"type": "a"}, {"type": "portmapp"}))
    run = cnitool(source_bin, "add", "net", "/x", cni_path=fake_dir, env={"FAKE_LOG": fake_log})
    assert run.returncode == cli.EXIT_NOT_RUN == 3, run
    assert calls(fake_log) == []  # plugin a was not run either
    assert "portmapp (plugin 2)" in run.json["msg"] and "no plugin was run" in run.json["msg"]
    assert fake_dir in run.json["msg"]
    assert not os.path.exists(cache_file(cnitool.cache_dir, "net", "/x"))


def test_add_checks_the_ipam_plugins_too(source_bin, fake_dir, cnitool, netconf, fake_log):
    netconf("10-net.conflist", listed("net", {"type": "a", "ipam": {"type": "host-locall"}}))
    run = cnitool(source_bin, "add", "net", "/x", cni_path=fake_dir, env={"FAKE_LOG": fake_log})
    assert run.returncode == 3, run
    assert "host-locall (ipam of plugin 1)" in run.json["msg"]
    assert calls(fake_log) == []


def test_a_missing_plugin_leaves_a_real_namespace_untouched(source_bin, cnitool, netconf, netns):
    netconf("10-net.conflist", listed("net", {"type": "loopback"}, {"type": "portmapp"}))
    run = cnitool(source_bin, "add", "net", netns)
    assert run.returncode == 3, run
    assert "UP" not in ip_json(netns, "link", "show", "lo")[0]["flags"]


def test_del_goes_on_past_a_missing_plugin_and_keeps_the_cache(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    path = netconf("10-net.conflist", listed("net", {"type": "a"}, {"type": "b"}))
    env = {"FAKE_LOG": fake_log}
    assert cnitool(source_bin, "add", "net", "/x", cni_path=fake_dir, env=env).returncode == 0
    cached = cache_file(cnitool.cache_dir, "net", "/x")
    assert os.path.exists(cached)
    # The file is edited into a list naming a plugin that does not exist.
    netconf("10-net.conflist", listed("net", {"type": "a"}, {"type": "portmapp"}, {"type": "b"}))
    os.truncate(fake_log, 0)
    run = cnitool(source_bin, "del", "net", "/x", cni_path=fake_dir, env=env)
    assert run.returncode == cli.EXIT_FAILED == 1, run
    assert calls(fake_log) == [("b", "DEL"), ("a", "DEL")]  # both others ran, in reverse order
    assert "portmapp (plugin 2) is in no plugin directory" in run.stderr
    assert "portmapp" in run.json["msg"] and "incomplete" in run.json["msg"]
    assert os.path.exists(cached)  # kept for the DEL after the fix
    # Fixed: the next DEL completes and forgets the attachment.
    netconf("10-net.conflist", listed("net", {"type": "a"}, {"type": "b"}))
    assert cnitool(source_bin, "del", "net", "/x", cni_path=fake_dir, env=env).returncode == 0
    assert not os.path.exists(cached)
    assert path


def test_del_goes_on_past_a_failing_plugin(source_bin, fake_dir, cnitool, netconf, fake_log):
    netconf("10-net.conflist", listed("net", {"type": "a"}, {"type": "b"}))
    env = {"FAKE_LOG": fake_log, "FAKE_FAIL": "b:DEL"}
    run = cnitool(source_bin, "del", "net", "/x", cni_path=fake_dir, env=env)
    assert run.returncode == 1, run
    assert calls(fake_log) == [("b", "DEL"), ("a", "DEL")]


# -- cached capability arguments ------------------------------------------------------------


def test_check_and_del_reuse_the_capability_args_cached_by_add(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    netconf("10-net.conflist", listed("net", {"type": "a", "capabilities": {"portMappings": True}}))
    env = {"FAKE_LOG": fake_log}
    caps = json.dumps({"portMappings": PORTS})
    add = cnitool(
        source_bin, "add", "net", "/x", "--capability-args", caps, cni_path=fake_dir, env=env
    )
    assert add.returncode == 0, add
    assert cnitool(source_bin, "check", "net", "/x", cni_path=fake_dir, env=env).returncode == 0
    assert cnitool(source_bin, "del", "net", "/x", cni_path=fake_dir, env=env).returncode == 0
    recorded = recording_plugin.read_log(fake_log)
    assert [c["env"]["CNI_COMMAND"] for c in recorded] == ["ADD", "CHECK", "DEL"]
    for call in recorded:
        assert call["conf"]["runtimeConfig"] == {"portMappings": PORTS}, call["env"]


def test_explicit_capability_args_win_over_the_cached_ones(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    netconf("10-net.conflist", listed("net", {"type": "a", "capabilities": {"portMappings": True}}))
    env = {"FAKE_LOG": fake_log}
    caps = json.dumps({"portMappings": PORTS})
    other = [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}]
    cnitool(source_bin, "add", "net", "/x", "--capability-args", caps, cni_path=fake_dir, env=env)
    env["CAP_ARGS"] = json.dumps({"portMappings": other})
    assert cnitool(source_bin, "check", "net", "/x", cni_path=fake_dir, env=env).returncode == 0
    assert recording_plugin.read_log(fake_log)[-1]["conf"]["runtimeConfig"] == {
        "portMappings": other
    }


# -- finding the network --------------------------------------------------------------------


def test_a_missing_network_is_named_and_a_broken_neighbour_only_warned_about(
    source_bin, cnitool, netconf
):
    bad = netconf("10-bad.conflist", '{"name": "bad", "plugins": [')
    netconf("20-other.conflist", listed("other", {"type": "loopback"}))
    run = cnitool(source_bin, "add", "nosuchnet", "/x")
    assert run.returncode == 1, run
    assert run.json["msg"].startswith('no net configuration with name "nosuchnet"')
    assert "10-bad" not in run.json["msg"]
    assert f"warning: skipped a config file that cannot be used: {bad}" in run.stderr


# -- status ---------------------------------------------------------------------------------


def test_status_on_a_list_without_status_is_an_error(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    netconf("10-net.conflist", listed("net", {"type": "a"}, version="1.0.0"))
    run = cnitool(source_bin, "status", "net", cni_path=fake_dir, env={"FAKE_LOG": fake_log})
    assert run.returncode == 3, run
    assert 'cniVersion "1.0.0", which has no STATUS command' in run.json["msg"]
    assert '"cniVersion": "1.1.0"' in run.json["details"]
    assert calls(fake_log) == []


# -- help -----------------------------------------------------------------------------------


def tool(bin_dir, *argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(bin_dir, "cnitool"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": PATH},
    )


@pytest.mark.parametrize("argv", [("add", "--help"), ("help", "add"), ("--raw", "add", "-h")])
def test_per_command_help(source_bin, argv):
    proc = tool(source_bin, *argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: cnitool add [options] NETWORK NETNS")
    assert "--capability-args" in proc.stdout and "--exec" in proc.stdout
    assert "--valid" not in proc.stdout  # gc's, not add's


def test_help_names_every_command_and_the_exit_statuses(source_bin):
    proc = tool(source_bin, "help")
    assert proc.returncode == 0
    for command in cli.COMMANDS:
        assert f"  {command} " in proc.stdout
    assert "exit status:" in proc.stdout and "CNITOOL_EXEC" in proc.stdout
    assert "'version', 'doctor')" in tool(source_bin, "bogus").stderr


def test_help_for_doctor_and_for_nothing(source_bin):
    proc = tool(source_bin, "help", "doctor")
    assert proc.returncode == 0 and "--pycni-socket" in proc.stdout
    wrong = tool(source_bin, "help", "nosuch")
    assert wrong.returncode == 2 and "no command 'nosuch'" in wrong.stderr


def test_every_option_has_help_text():
    parsers = [cli.parser(), doctor.parser()]
    parsers += [cli.command_parser(command) for command in cli.COMMAND_HELP]
    for parser in parsers:
        for action in parser._actions:
            assert action.help, (parser.prog, action.option_strings or action.dest)


# -- in-process or exec ---------------------------------------------------------------------


@pytest.fixture
def logged_loopback(netconf, tmp_path):
    log = str(tmp_path / "plugin-calls.jsonl")
    netconf("10-lo.conflist", listed("lo-net", {"type": "loopback", "logFile": log}))
    return log


def plugin_pids(log) -> list:
    with open(log) as f:
        return [(line["pid"], line["path"]) for line in map(json.loads, f)]


@pytest.mark.parametrize("how", ["default", "--exec", "CNITOOL_EXEC=1"])
def test_frozen_cnitool_runs_plugins_in_process_unless_told_to_exec(
    frozen_bin, cnitool, logged_loopback, netns, how
):
    flags = ["--exec"] if how == "--exec" else []
    env = {"CNITOOL_EXEC": "1"} if how.startswith("CNITOOL") else {}
    add = cnitool(frozen_bin, "add", "lo-net", netns, *flags, env=env)
    assert add.returncode == 0, add
    assert cnitool(frozen_bin, "del", "lo-net", netns, *flags, env=env).returncode == 0
    [(pid, path)] = plugin_pids(logged_loopback)[:1]
    assert path == "frozen"
    if how == "default":
        assert pid == add.pid  # inside cnitool's own process
    else:
        assert pid != add.pid  # a process of its own, as from a runtime


def test_exec_goes_through_the_daemon_when_one_runs(
    frozen_bin, cnitool, logged_loopback, netns, start_daemon
):
    env = {"PYCNI_SOCKET": start_daemon(frozen_bin).socket}
    assert cnitool(frozen_bin, "add", "lo-net", netns, "--exec", env=env).returncode == 0
    assert cnitool(frozen_bin, "del", "lo-net", netns, "--exec", env=env).returncode == 0
    assert [path for _, path in plugin_pids(logged_loopback)] == ["daemon", "daemon"]
