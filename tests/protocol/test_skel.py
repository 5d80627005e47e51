"""The skeleton's contract: env validation, stdin checks, version gating, output and exit codes.

Driven in-process through skel.dispatch with fake env and streams, the way the fork-server will.
"""

import io
import json

import pytest

from libcni.protocol import skel
from libcni.protocol.errors import CNIError
from libcni.protocol.result import Result

FULL_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "ctr1",
    "CNI_NETNS": "/var/run/netns/nope",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}
CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "fake"}


class Recorder:
    """A fake plugin that records which verb ran."""

    def __init__(self):
        self.calls = []

    def verb(self, name):
        def handler(call):
            self.calls.append((name, call))
            if name == "ADD":
                result = Result(call.cni_version)
                result.add_ip("10.1.2.3/24", "10.1.2.1")
                return result
            return None

        return handler


def make_plugin(recorder, versions=None, **missing):
    verbs = {v: recorder.verb(v) for v in ("ADD", "DEL", "CHECK", "GC", "STATUS")}
    kwargs = {
        "add": verbs["ADD"],
        "delete": verbs["DEL"],
        "check": verbs["CHECK"],
        "gc": verbs["GC"],
        "status": verbs["STATUS"],
    }
    for key in missing:
        kwargs[key] = None
    if versions:
        kwargs["supported_versions"] = versions
    return skel.Plugin("fake", **kwargs)


def run(env, stdin=None, plugin=None, recorder=None):
    recorder = recorder or Recorder()
    plugin = plugin or make_plugin(recorder)
    data = json.dumps(CONF).encode() if stdin is None else stdin
    out, err = io.StringIO(), io.StringIO()
    code = skel.dispatch(plugin, env, io.BytesIO(data), out, err)
    return code, out.getvalue(), err.getvalue(), recorder


def error_of(out):
    return json.loads(out)


def test_add_prints_result_in_config_version():
    code, out, _, rec = run(FULL_ENV)
    assert code == 0
    assert json.loads(out) == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1"}],
    }
    assert rec.calls[0][0] == "ADD"


def test_missing_env_lists_every_variable_in_upstream_order():
    code, out, _, _ = run({"CNI_COMMAND": "ADD"})
    assert code == 1
    assert error_of(out) == {
        "code": 4,
        "msg": "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
    }


def test_error_json_is_go_indented_without_trailing_newline():
    _, out, _, _ = run({"CNI_COMMAND": "ADD"})
    assert out.startswith('{\n    "code": 4,\n    "msg": ')
    assert not out.endswith("\n")


def test_del_does_not_require_netns():
    env = dict(FULL_ENV, CNI_COMMAND="DEL", CNI_NETNS="")
    code, out, _, rec = run(env)
    assert (code, out) == (0, "")
    assert rec.calls[0][0] == "DEL"


def test_gc_and_status_need_only_command_and_path():
    for command in ("GC", "STATUS"):
        env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
        code, out, _, rec = run(env, json.dumps(dict(CONF, cniVersion="1.1.0")).encode())
        assert (code, out) == (0, "")
        assert rec.calls[0][0] == command


def test_no_command_prints_about_to_stderr_and_exits_zero():
    code, out, err, rec = run({})
    assert code == 0 and out == "" and not rec.calls
    lines = err.splitlines()
    assert lines[0].startswith("CNI fake plugin pycni v")
    assert lines[1] == (
        "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
    )


def test_version_output_is_one_compact_line():
    code, out, _, _ = run({"CNI_COMMAND": "VERSION"}, stdin=b"garbage")
    assert code == 0
    assert out == (
        '{"cniVersion":"1.1.0","supportedVersions":'
        '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
    )


def test_version_lists_only_supported_versions():
    plugin = make_plugin(Recorder(), versions=("0.4.0", "1.0.0", "1.1.0"))
    _, out, _, _ = run({"CNI_COMMAND": "VERSION"}, plugin=plugin)
    assert json.loads(out)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize(
    "container_id,msg",
    [
        ("-bad", "invalid characters in containerID"),
        ("a/../../etc", "invalid characters in containerID"),
        ("ctr 1", "invalid characters in containerID"),
    ],
)
def test_invalid_container_id(container_id, msg):
    code, out, _, rec = run(dict(FULL_ENV, CNI_CONTAINERID=container_id))
    assert code == 1 and not rec.calls
    assert error_of(out) == {"code": 4, "msg": msg, "details": container_id}


@pytest.mark.parametrize(
    "ifname,msg",
    [
        ("a" * 16, "interface name is too long"),
        (".", "interface name is . or .."),
        ("..", "interface name is . or .."),
        ("eth/0", "interface name contains / or : or whitespace characters"),
        ("eth:0", "interface name contains / or : or whitespace characters"),
        ("eth 0", "interface name contains / or : or whitespace characters"),
    ],
)
def test_invalid_ifname(ifname, msg):
    code, out, _, rec = run(dict(FULL_ENV, CNI_IFNAME=ifname))
    assert code == 1 and not rec.calls
    error = error_of(out)
    assert (error["code"], error["msg"]) == (4, msg)


def test_ifname_of_fifteen_chars_is_accepted():
    code, _, _, _ = run(dict(FULL_ENV, CNI_IFNAME="a" * 15))
    assert code == 0


def test_broken_json_is_decoding_failure():
    code, out, _, rec = run(FULL_ENV, stdin=b"{not json")
    assert code == 1 and not rec.calls
    error = error_of(out)
    assert error["code"] == 6
    assert error["msg"].startswith("error unmarshall network config: ")


def test_missing_network_name():
    code, out, _, _ = run(FULL_ENV, stdin=b'{"cniVersion":"1.0.0"}')
    assert error_of(out) == {"code": 7, "msg": "missing network name"}


def test_bad_network_name():
    code, out, _, _ = run(FULL_ENV, stdin=b'{"cniVersion":"1.0.0","name":"../x"}')
    assert error_of(out) == {
        "code": 7,
        "msg": "invalid characters found in network name",
        "details": "../x",
    }


def test_unknown_command():
    code, out, _, _ = run(dict(FULL_ENV, CNI_COMMAND="FROB"))
    assert code == 1
    assert error_of(out)["code"] == 4
    assert error_of(out)["msg"] == "unknown CNI_COMMAND: FROB"


def test_incompatible_version_lists_supported():
    code, out, _, rec = run(FULL_ENV, stdin=b'{"cniVersion":"9.9.9","name":"n"}')
    assert code == 1 and not rec.calls
    assert error_of(out) == {
        "code": 1,
        "msg": "incompatible CNI versions",
        "details": 'config is "9.9.9", plugin supports '
        '["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]',
    }


def test_empty_version_means_0_1_0():
    code, out, _, rec = run(FULL_ENV, stdin=b'{"name":"n"}')
    assert code == 0
    assert rec.calls[0][1].cni_version == "0.1.0"
    assert json.loads(out)["cniVersion"] == "0.1.0"


@pytest.mark.parametrize(
    "command,minimum", [("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")]
)
def test_verbs_gated_by_config_version(command, minimum):
    code, out, _, rec = run(
        dict(FULL_ENV, CNI_COMMAND=command), stdin=b'{"cniVersion":"0.3.1","name":"n"}'
    )
    assert code == 1 and not rec.calls
    error = error_of(out)
    assert (error["code"], error["msg"]) == (1, f"config version does not allow {command}")


def test_check_unparsable_version_is_decoding_failure():
    code, out, _, _ = run(
        dict(FULL_ENV, CNI_COMMAND="CHECK"), stdin=b'{"cniVersion":"1.x","name":"n"}'
    )
    assert error_of(out)["code"] == 6


def test_check_refused_when_plugin_is_older():
    plugin = make_plugin(Recorder(), versions=("0.3.1", "0.4.0"))
    code, out, _, _ = run(
        dict(FULL_ENV, CNI_COMMAND="CHECK"),
        stdin=b'{"cniVersion":"1.0.0","name":"n"}',
        plugin=plugin,
    )
    assert error_of(out) == {"code": 1, "msg": "plugin version does not allow CHECK"}


def test_missing_handler_succeeds_silently():
    plugin = make_plugin(Recorder(), gc=True, status=True)
    for command in ("GC", "STATUS"):
        code, out, _, _ = run(
            {"CNI_COMMAND": command, "CNI_PATH": "/x"},
            stdin=b'{"cniVersion":"1.1.0","name":"n"}',
            plugin=plugin,
        )
        assert (code, out) == (0, "")


def test_plugin_error_is_printed_as_is():
    def failing(call):
        raise CNIError(11, "busy", "try later")

    plugin = skel.Plugin("fake", add=failing)
    code, out, _, _ = run(FULL_ENV, plugin=plugin)
    assert code == 1
    assert error_of(out) == {"code": 11, "msg": "busy", "details": "try later"}


def test_unexpected_exception_becomes_code_999_with_traceback_on_stderr():
    def crashing(call):
        raise ValueError("boom")

    code, out, err, _ = run(FULL_ENV, plugin=skel.Plugin("fake", add=crashing))
    assert code == 1
    assert error_of(out) == {"code": 999, "msg": "boom"}
    assert "Traceback" in err and "ValueError" in err


def test_own_netns_is_refused_before_the_plugin_runs():
    env = dict(FULL_ENV, CNI_NETNS="/proc/self/ns/net")
    code, out, _, rec = run(env)
    assert code == 1 and not rec.calls
    assert error_of(out)["code"] == 8


def test_own_netns_allowed_with_override():
    env = dict(FULL_ENV, CNI_NETNS="/proc/self/ns/net", CNI_NETNS_OVERRIDE="1")
    code, _, _, rec = run(env)
    assert code == 0 and rec.calls


def test_dispatch_keeps_no_state_between_calls():
    recorder = Recorder()
    plugin = make_plugin(recorder)
    first = run(FULL_ENV, plugin=plugin, recorder=recorder)
    second = run(dict(FULL_ENV, CNI_CONTAINERID="ctr2"), plugin=plugin, recorder=recorder)
    assert first[1] == second[1]
    assert [c[1].container_id for c in recorder.calls] == ["ctr1", "ctr2"]


def test_prev_result_without_version_takes_the_config_version():
    seen = {}

    def add(call):
        seen["prev"] = call.prev_result()
        return seen["prev"]

    conf = dict(CONF, prevResult={"ips": [{"address": "10.0.0.2/24"}]})
    code, out, _, _ = run(
        FULL_ENV, stdin=json.dumps(conf).encode(), plugin=skel.Plugin("fake", add=add)
    )
    assert code == 0
    assert seen["prev"].cni_version == "1.0.0"
    assert json.loads(out)["ips"] == [{"address": "10.0.0.2/24"}]


def test_prev_result_from_another_family_is_refused_with_upstream_message():
    def add(call):
        return call.prev_result()

    conf = dict(CONF, prevResult={"cniVersion": "0.4.0", "ips": []})
    code, out, _, _ = run(
        FULL_ENV, stdin=json.dumps(conf).encode(), plugin=skel.Plugin("fake", add=add)
    )
    assert code == 1
    assert error_of(out)["msg"] == (
        "could not parse prevResult: result type supports "
        '[1.0.0 1.1.0] but unmarshalled CNIVersion is "0.4.0"'
    )


def test_json_nested_too_deeply_is_code_6_not_a_recursion_error():
    deep = b'{"name": "net1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    code, out, err, rec = run(FULL_ENV, stdin=deep)
    assert code == 1 and not rec.calls
    assert error_of(out)["code"] == 6 and "nested deeper" in error_of(out)["msg"]
    assert "Traceback" not in err


@pytest.mark.parametrize("key", ["name", "cniVersion"])
def test_a_lone_surrogate_still_gives_valid_json_on_a_strict_stdout(key):
    stdin = json.dumps(dict(CONF, **{key: "\ud800"})).encode()
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    code = skel.dispatch(make_plugin(Recorder()), FULL_ENV, io.BytesIO(stdin), out, io.StringIO())
    out.flush()
    assert code == 1
    assert isinstance(json.loads(raw.getvalue().decode("utf-8"))["code"], int)


def test_an_unexpected_exception_prints_one_short_line():
    def crashing(call):
        raise ValueError("first line\n" + "x" * 500)

    code, out, err, _ = run(FULL_ENV, plugin=skel.Plugin("fake", add=crashing))
    assert code == 1 and error_of(out) == {"code": 999, "msg": "first line"}
    assert "x" * 500 in err


@pytest.mark.parametrize(
    "attachments",
    [None, "c1", {"containerID": "c1"}, [None], [{"containerID": 1, "ifname": "eth0"}]],
)
def test_gc_attachments_must_be_a_list_of_id_and_ifname(attachments):
    conf = dict(CONF, cniVersion="1.1.0")
    if attachments is not None:
        conf["cni.dev/valid-attachments"] = attachments
    seen = []
    plugin = skel.Plugin("fake", gc=lambda call: seen.append(call.valid_attachments()))
    env = dict(FULL_ENV, CNI_COMMAND="GC")
    code, out, _, _ = run(env, stdin=json.dumps(conf).encode(), plugin=plugin)
    assert code == 1 and error_of(out)["code"] == 7 and not seen


def test_gc_attachments_listed_are_pairs():
    conf = dict(CONF, cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    seen = []
    plugin = skel.Plugin("fake", gc=lambda call: seen.append(call.valid_attachments()))
    env = dict(FULL_ENV, CNI_COMMAND="GC")
    code, _, _, _ = run(env, stdin=json.dumps(conf).encode(), plugin=plugin)
    assert code == 0 and seen == [[("c1", "eth0")]]
