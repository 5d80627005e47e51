"""Running network lists like a runtime: stdin and env each plugin gets, order, cache, GC, STATUS.

Most tests use tests/kit/recording_plugin.py (real processes that log what they received); the
last ones chain our loopback with Debian's Go loopback in a namespace the test owns.
"""

import json
import os

import pytest
from conftest import ip_json
from kit import recording_plugin

from libcni.protocol.errors import CNIError
from libcni.runtime import cache, conflist
from libcni.runtime.netlist import (
    GCFailed,
    PluginFailed,
    Runtime,
    RuntimeConf,
    build_stdin,
    probe_version,
)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def runtime_for(fake_dir, fake_log, tmp_path):
    """Runtime(**env knobs) over the fake plugins, with a private cache directory."""

    def make(**knobs):
        environ = {"PATH": PATH, "FAKE_LOG": fake_log, "FAKE_MARK": "inherited", **knobs}
        return Runtime([fake_dir], cache_dir=str(tmp_path / "cache"), environ=environ)

    return make


def calls(log):
    return recording_plugin.read_log(log)


def make_list(version="1.0.0", types=("a", "b", "c"), **extra) -> conflist.NetworkList:
    obj = {"cniVersion": version, "name": "net", "plugins": [{"type": t} for t in types]}
    obj.update(extra)
    return conflist.list_from_bytes(json.dumps(obj).encode())


def attachment(container_id="ctr1", **extra) -> RuntimeConf:
    return RuntimeConf(
        container_id=container_id, netns="/var/run/netns/none", ifname="eth0", **extra
    )


# -- stdin building -------------------------------------------------------------------------


def test_stdin_carries_the_lists_name_and_version():
    netlist = make_list("0.4.0")
    netlist.plugins[0].conf.update({"name": "own", "cniVersion": "9.9.9", "mtu": 1400})
    stdin = build_stdin(netlist, netlist.plugins[0], None, attachment())
    assert stdin == b'{"cniVersion":"0.4.0","mtu":1400,"name":"net","type":"a"}'


def test_runtime_config_holds_declared_and_supplied_capabilities_only():
    plugin = conflist.plugin_from_object(
        {"type": "a", "capabilities": {"portMappings": True, "bandwidth": True, "mac": False}},
        "test",
    )
    rt = attachment(capability_args={"portMappings": [1], "mac": "aa", "ips": ["x"]})
    conf = json.loads(build_stdin(make_list(), plugin, None, rt))
    assert conf["runtimeConfig"] == {"portMappings": [1]}
    assert conf["capabilities"] == {"portMappings": True, "bandwidth": True, "mac": False}


def test_runtime_config_from_the_file_is_kept_when_nothing_is_supplied():
    plugin = conflist.plugin_from_object(
        {"type": "a", "capabilities": {"mac": True}, "runtimeConfig": {"mac": "file"}}, "test"
    )
    conf = json.loads(build_stdin(make_list(), plugin, None, attachment()))
    assert conf["runtimeConfig"] == {"mac": "file"}


def test_prev_result_is_injected_when_given():
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    netlist = make_list()
    conf = json.loads(build_stdin(netlist, netlist.plugins[0], prev, None))
    assert conf["prevResult"] == prev


# -- ADD ------------------------------------------------------------------------------------


def test_add_runs_plugins_in_order_chaining_each_result(runtime_for, fake_log):
    result = runtime_for().add(make_list(), attachment())
    recorded = calls(fake_log)
    assert [c["plugin"] for c in recorded] == ["a", "b", "c"]
    assert "prevResult" not in recorded[0]["conf"]
    assert recorded[1]["conf"]["prevResult"]["interfaces"] == [{"name": "a"}]
    assert recorded[2]["conf"]["prevResult"]["interfaces"] == [{"name": "a"}, {"name": "b"}]
    assert [i["name"] for i in result.interfaces] == ["a", "b", "c"]


def test_add_environment_has_the_cni_variables_and_the_callers(runtime_for, fake_log, fake_dir):
    rt = attachment(args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")])
    runtime_for().add(make_list(types=("a",)), rt)
    (call,) = calls(fake_log)
    assert call["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": fake_dir,
    }
    assert call["mark"] == "inherited"


def test_add_caches_the_final_result_with_the_list_bytes(runtime_for, tmp_path):
    netlist = make_list()
    result = runtime_for().add(netlist, attachment())
    entry = cache.read_config(str(tmp_path / "cache"), "net", attachment())
    assert entry.config == netlist.raw
    cached = cache.read_result(str(tmp_path / "cache"), "net", "1.0.0", attachment())
    assert cached == result.to_version("1.0.0")


def test_add_stops_at_the_first_failure_and_caches_nothing(runtime_for, fake_log, tmp_path):
    runtime = runtime_for(FAKE_FAIL="b:ADD")
    with pytest.raises(PluginFailed) as caught:
        runtime.add(make_list(), attachment())
    assert [c["plugin"] for c in calls(fake_log)] == ["a", "b"]
    assert caught.value.code == 11
    assert caught.value.msg == 'plugin type="b" failed (add): b refuses ADD'
    assert not os.path.exists(tmp_path / "cache" / "results" / "net-ctr1-eth0")


def test_result_without_version_takes_the_lists(runtime_for):
    result = runtime_for(FAKE_RESULT_NO_VERSION="1").add(make_list("0.4.0", ("a",)), attachment())
    assert result.cni_version == "0.4.0"


def test_result_in_another_version_is_cached_as_is_and_converted_on_use(runtime_for, fake_log):
    runtime = runtime_for(FAKE_RESULT_VERSION="0.3.1")
    netlist = make_list("1.0.0", ("a", "b"))
    runtime.add(netlist, attachment())
    assert calls(fake_log)[1]["conf"]["prevResult"]["cniVersion"] == "0.3.1"
    entry = json.loads(open(os.path.join(runtime.cache_dir, "results", "net-ctr1-eth0")).read())
    assert entry["result"]["cniVersion"] == "0.3.1"
    runtime.delete(netlist, attachment())
    assert calls(fake_log)[-1]["conf"]["prevResult"]["cniVersion"] == "1.0.0"


def test_missing_plugin_names_the_search_path(runtime_for, fake_dir):
    with pytest.raises(PluginFailed) as caught:
        runtime_for().add(make_list(types=("nope",)), attachment())
    assert caught.value.msg == (
        f'plugin type="nope" failed (add): failed to find plugin "nope" in path [{fake_dir}]'
    )


def test_invalid_container_id_is_refused_before_any_plugin_runs(runtime_for, fake_log):
    with pytest.raises(CNIError) as caught:
        runtime_for().add(make_list(), attachment("../escape"))
    assert caught.value.code == 4
    assert calls(fake_log) == []


# -- DEL and CHECK --------------------------------------------------------------------------


def test_del_runs_plugins_in_reverse_with_the_cached_result(runtime_for, fake_log, tmp_path):
    runtime = runtime_for()
    netlist = make_list()
    final = runtime.add(netlist, attachment()).to_version("1.0.0")
    runtime.delete(netlist, attachment())
    deletes = [c for c in calls(fake_log) if c["env"]["CNI_COMMAND"] == "DEL"]
    assert [c["plugin"] for c in deletes] == ["c", "b", "a"]
    assert all(c["conf"]["prevResult"] == final for c in deletes)
    assert not os.path.exists(tmp_path / "cache" / "results" / "net-ctr1-eth0")


def test_del_before_0_4_0_sends_no_prev_result(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list("0.3.1")
    runtime.add(netlist, attachment())
    runtime.delete(netlist, attachment())
    deletes = [c for c in calls(fake_log) if c["env"]["CNI_COMMAND"] == "DEL"]
    assert deletes and all("prevResult" not in c["conf"] for c in deletes)


def test_del_with_an_unusable_cache_carries_on_and_drops_it(runtime_for, fake_log):
    runtime = runtime_for()
    path = os.path.join(runtime.cache_dir, "results", "net-ctr1-eth0")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]}')
    runtime.delete(make_list(), attachment())
    assert [c["plugin"] for c in calls(fake_log)] == ["c", "b", "a"]
    assert not os.path.exists(path)


def test_check_runs_plugins_in_order_with_the_cached_result(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list()
    final = runtime.add(netlist, attachment()).to_version("1.0.0")
    runtime.check(netlist, attachment())
    checks = [c for c in calls(fake_log) if c["env"]["CNI_COMMAND"] == "CHECK"]
    assert [c["plugin"] for c in checks] == ["a", "b", "c"]
    assert all(c["conf"]["prevResult"] == final for c in checks)


def test_check_is_skipped_when_disabled(runtime_for, fake_log):
    runtime_for().check(make_list(disableCheck=True), attachment())
    assert calls(fake_log) == []


def test_check_before_0_4_0_is_refused(runtime_for, fake_log):
    with pytest.raises(CNIError) as caught:
        runtime_for().check(make_list("0.3.1"), attachment())
    assert caught.value.code == 1
    assert caught.value.msg == 'configuration version "0.3.1" does not support the CHECK command'
    assert calls(fake_log) == []


# -- GC and STATUS --------------------------------------------------------------------------


def _cache_attachments(runtime, netlist, *container_ids):
    for container_id in container_ids:
        runtime.add(netlist, attachment(container_id))


def test_gc_deletes_stale_attachments_then_gcs_each_plugin(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list("1.1.0", ("a", "b"))
    _cache_attachments(runtime, netlist, "c1", "c2")
    _cache_attachments(runtime, make_list("1.1.0", ("a",), name="other"), "c3")
    os.unlink(fake_log)
    deleted = runtime.gc(netlist, [("c1", "eth0")])
    assert deleted == [("c2", "eth0")]
    recorded = calls(fake_log)
    assert [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in recorded] == [
        ("b", "DEL"),
        ("a", "DEL"),
        ("a", "GC"),
        ("b", "GC"),
    ]
    assert recorded[0]["env"]["CNI_CONTAINERID"] == "c2"
    gc_call = recorded[2]
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    assert gc_call["conf"]["cni.dev/valid-attachments"] == valid
    assert gc_call["conf"]["cni.dev/attachments"] == valid
    assert gc_call["env"]["CNI_CONTAINERID"] == "" and gc_call["env"]["CNI_IFNAME"] == ""
    left = [(a.network, a.container_id) for a in runtime.cached_attachments()]
    assert left == [("net", "c1"), ("other", "c3")]


def test_gc_without_a_valid_set_deletes_everything_and_sends_none(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list("1.1.0", ("a",))
    _cache_attachments(runtime, netlist, "c1")
    runtime.gc(netlist)
    gc_call = calls(fake_log)[-1]
    assert gc_call["env"]["CNI_COMMAND"] == "GC"
    assert "cni.dev/valid-attachments" not in gc_call["conf"]
    assert runtime.cached_attachments() == []


def test_gc_is_skipped_when_disabled(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list("1.1.0", ("a",), disableGC=True)
    _cache_attachments(runtime, netlist, "c1")
    runtime.gc(netlist)
    assert [c["env"]["CNI_COMMAND"] for c in calls(fake_log)] == ["ADD"]


def test_gc_before_1_1_0_only_deletes_stale_attachments(runtime_for, fake_log):
    runtime = runtime_for()
    netlist = make_list("1.0.0", ("a",))
    _cache_attachments(runtime, netlist, "c1")
    runtime.gc(netlist, [])
    assert [c["env"]["CNI_COMMAND"] for c in calls(fake_log)] == ["ADD", "DEL"]


def test_gc_reports_every_error_and_still_asks_every_plugin(runtime_for, fake_log):
    runtime = runtime_for(FAKE_FAIL="a:GC")
    with pytest.raises(GCFailed) as caught:
        runtime.gc(make_list("1.1.0", ("a", "b")), [])
    assert [c["plugin"] for c in calls(fake_log)] == ["a", "b"]
    assert caught.value.code == 11
    assert 'plugin type="a" failed (gc): a refuses GC' in caught.value.msg


def test_status_asks_plugins_in_order_and_stops_at_the_first_error(runtime_for, fake_log):
    runtime = runtime_for(FAKE_FAIL="b:STATUS", FAKE_FAIL_CODE="50")
    with pytest.raises(PluginFailed) as caught:
        runtime.status(make_list("1.1.0"))
    assert [c["plugin"] for c in calls(fake_log)] == ["a", "b"]
    assert caught.value.code == 50
    assert calls(fake_log)[0]["conf"] == {"cniVersion": "1.1.0", "name": "net", "type": "a"}


def test_status_before_1_1_0_asks_nobody(runtime_for, fake_log):
    assert runtime_for().status(make_list("1.0.0")) == []
    assert calls(fake_log) == []


# -- VERSION probe --------------------------------------------------------------------------


def test_version_probe_sends_what_runtimes_send(fake_dir, fake_log):
    environ = {"PATH": PATH, "FAKE_LOG": fake_log, "FAKE_VERSIONS": "0.4.0,1.0.0"}
    assert probe_version(os.path.join(fake_dir, "a"), environ) == ["0.4.0", "1.0.0"]
    (call,) = calls(fake_log)
    assert call["stdin"] == '{"cniVersion":"1.1.0"}'
    assert call["env"]["CNI_COMMAND"] == "VERSION"
    assert (call["env"]["CNI_NETNS"], call["env"]["CNI_IFNAME"], call["env"]["CNI_PATH"]) == (
        "dummy",
        "dummy",
        "dummy",
    )


def test_plugin_without_version_command_supports_0_1_0(fake_dir):
    environ = {"PATH": PATH, "FAKE_NO_VERSION_CMD": "1"}
    assert probe_version(os.path.join(fake_dir, "a"), environ) == ["0.1.0"]


# -- real plugins ---------------------------------------------------------------------------


@pytest.fixture
def mixed_path(source_bin, go_bin, tmp_path):
    """Our loopback as `loopback`, Debian's Go loopback as `goloopback`."""
    directory = tmp_path / "mixed"
    directory.mkdir()
    os.symlink(os.path.join(source_bin, "loopback"), directory / "loopback")
    os.symlink(os.path.join(go_bin, "loopback"), directory / "goloopback")
    return str(directory)


def lo_is_up(netns) -> bool:
    return "UP" in ip_json(netns, "link", "show", "lo")[0]["flags"]


def test_our_loopback_chained_into_gos_passes_the_result_through(mixed_path, netns, tmp_path):
    runtime = Runtime([mixed_path], cache_dir=str(tmp_path / "cache"), environ={"PATH": PATH})
    netlist = make_list("1.0.0", ("loopback", "goloopback"))
    rt = RuntimeConf(container_id="ctr1", netns=netns, ifname="lo")
    result = runtime.add(netlist, rt)
    assert lo_is_up(netns)
    assert result.interfaces == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}]
    assert [ip["address"] for ip in result.ips] == ["127.0.0.1/8", "::1/128"]
    runtime.check(netlist, rt)
    runtime.delete(netlist, rt)
    assert not lo_is_up(netns)
    assert runtime.cached_attachments() == []
