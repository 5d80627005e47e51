"""Delegation to other plugins: lookup in CNI_PATH, exec, result and error parsing, retries."""

import io
import json
import os
import threading
import time

import pytest

from libcni.delegation import invoke
from libcni.protocol import skel
from libcni.protocol.errors import CNIError


def write_plugin(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def make_call(plugin_path, conf=None, **env):
    conf = conf or {"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "fake"}}
    full_env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": plugin_path,
        **env,
    }
    return skel.Call("ADD", full_env, json.dumps(conf).encode(), conf, io.StringIO())


def test_find_plugin_searches_every_directory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = write_plugin(tmp_path / "b", "fake", "exit 0")
    assert invoke.find_plugin("fake", f"{tmp_path / 'a'}:{tmp_path / 'b'}") == path


def test_find_plugin_not_found_names_the_path(tmp_path):
    with pytest.raises(CNIError) as err:
        invoke.find_plugin("nope", f"{tmp_path}:/also")
    assert err.value.msg == f'failed to find plugin "nope" in path [{tmp_path} /also]'


@pytest.mark.parametrize("name", ["../host-local", "a/b", ".."])
def test_find_plugin_refuses_paths(name, tmp_path):
    with pytest.raises(CNIError, match="must not contain a path"):
        invoke.find_plugin(name, str(tmp_path))


def test_find_plugin_empty_name():
    with pytest.raises(CNIError, match="no plugin name provided"):
        invoke.find_plugin("", "/x")


def test_delegate_passes_env_and_stdin_and_parses_result(tmp_path):
    write_plugin(
        tmp_path,
        "fake",
        'cat > "$0.stdin"; env > "$0.env"\nprintf \'{"ips":[{"address":"10.0.0.2/24"}]}\'',
    )
    call = make_call(str(tmp_path), CNI_ARGS="IgnoreUnknown=1")
    result = invoke.delegate(call, "fake", "ADD")
    assert result.cni_version == "1.0.0"  # injected from the config: the child printed none
    assert result.ips == [{"address": "10.0.0.2/24"}]
    assert (tmp_path / "fake.stdin").read_bytes() == call.stdin_data
    env = (tmp_path / "fake.env").read_text()
    assert "CNI_COMMAND=ADD" in env and "CNI_ARGS=IgnoreUnknown=1" in env


def test_delegate_del_overrides_only_the_command(tmp_path):
    write_plugin(tmp_path, "fake", 'env > "$0.env"')
    assert invoke.delegate(make_call(str(tmp_path)), "fake", "DEL") is None
    assert "CNI_COMMAND=DEL" in (tmp_path / "fake.env").read_text()


def test_child_error_keeps_its_code(tmp_path):
    write_plugin(tmp_path, "fake", 'printf \'{"code": 50, "msg": "full", "details": "d"}\'; exit 1')
    with pytest.raises(CNIError) as err:
        invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")
    assert (err.value.code, err.value.msg, err.value.details) == (50, "full", "d")


def test_child_failing_silently(tmp_path):
    write_plugin(tmp_path, "fake", "exit 3")
    with pytest.raises(CNIError) as err:
        invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")
    assert err.value.msg == "netplugin failed with no error message: exit status 3"


def test_child_failing_with_only_stderr(tmp_path):
    write_plugin(tmp_path, "fake", "echo oops >&2; exit 1")
    with pytest.raises(CNIError) as err:
        invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")
    assert err.value.msg == 'netplugin failed: "oops": exit status 1'


def test_child_failing_with_garbage(tmp_path):
    write_plugin(tmp_path, "fake", "echo garbage; exit 1")
    with pytest.raises(CNIError) as err:
        invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")
    assert err.value.msg.startswith("netplugin failed but error parsing its diagnostic message")


def test_result_of_another_family_is_refused(tmp_path):
    write_plugin(tmp_path, "fake", 'printf \'{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}\'')
    with pytest.raises(CNIError, match="result type supports"):
        invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")


def test_text_file_busy_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(invoke, "TEXT_BUSY_WAIT", 0.2)
    path = tmp_path / "fake"
    writer = open(path, "w")  # an open writer makes exec fail with ETXTBSY
    writer.write('#!/bin/sh\nprintf \'{"ips":[{"address":"10.0.0.9/24"}]}\'\n')
    writer.flush()
    os.chmod(path, 0o755)

    def release():
        time.sleep(0.5)
        writer.close()

    threading.Thread(target=release).start()
    result = invoke.delegate(make_call(str(tmp_path)), "fake", "ADD")
    assert result.ips[0]["address"] == "10.0.0.9/24"


def test_clean_environ_drops_frozen_variables():
    env = {
        "PATH": "/bin",
        "_MEIPASS2": "/x",
        "_PYI_APPLICATION_HOME_DIR": "/x",
        "_PYI_ARCHIVE_FILE": "/x/y",
        "LD_LIBRARY_PATH": "/bundle/_internal",
        "LD_LIBRARY_PATH_ORIG": "/usr/local/lib",
        "CNI_COMMAND": "ADD",
    }
    assert invoke.clean_environ(env) == {
        "PATH": "/bin",
        "LD_LIBRARY_PATH": "/usr/local/lib",
        "CNI_COMMAND": "ADD",
    }


def test_clean_environ_without_original_library_path():
    env = {"_PYI_ARCHIVE_FILE": "/x", "LD_LIBRARY_PATH": "/bundle/_internal"}
    assert invoke.clean_environ(env) == {}


def test_clean_environ_keeps_a_users_library_path_when_not_frozen():
    assert invoke.clean_environ({"LD_LIBRARY_PATH": "/opt/lib"}) == {"LD_LIBRARY_PATH": "/opt/lib"}


def test_a_sibling_hard_link_of_the_frozen_program_is_recognised(tmp_path, monkeypatch):
    import sys

    import libcni
    from libcni.delegation import invoke

    program = tmp_path / "pycni"
    program.write_bytes(b"\x7fELF")
    os.link(program, tmp_path / "host-local")
    (tmp_path / "copy").write_bytes(b"\x7fELF")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    monkeypatch.setattr(libcni, "SIBLINGS", {"host-local": "ipam.host_local.host_local"})
    assert invoke.sibling_module(str(tmp_path / "host-local")) == "ipam.host_local.host_local"
    assert invoke.sibling_module(str(tmp_path / "copy")) is None
    monkeypatch.setattr(sys, "frozen", False)
    assert invoke.sibling_module(str(tmp_path / "host-local")) is None


def test_a_front_door_of_our_own_install_is_recognised(tmp_path, monkeypatch):
    # plugin dir: front door links beside _internal/, which holds the frozen program.
    import sys

    import libcni
    from libcni.delegation import invoke

    (tmp_path / "_internal").mkdir()
    program = tmp_path / "_internal" / "pycni"
    program.write_bytes(b"\x7fELF frozen")
    (tmp_path / "ptp").write_bytes(b"\x7fELF front door")
    os.link(tmp_path / "ptp", tmp_path / "host-local")
    other = tmp_path / "other"
    other.mkdir()
    (other / "host-local").write_bytes(b"\x7fELF front door")  # another install's
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    monkeypatch.setattr(libcni, "SIBLINGS", {"host-local": "ipam.host_local.host_local"})
    assert invoke.sibling_module(str(tmp_path / "host-local")) == "ipam.host_local.host_local"
    assert invoke.sibling_module(str(other / "host-local")) is None
    assert invoke.sibling_module(str(tmp_path / "ptp")) is None  # not in SIBLINGS


def test_in_process_sibling_answers_like_the_executable(tmp_path, monkeypatch, source_bin):
    import io
    import json
    import sys

    import libcni
    from libcni.delegation import invoke

    conf = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ipam": {
            "type": "static",
            "addresses": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1"}],
        },
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": source_bin,
        "PATH": "/usr/bin:/bin",
    }
    stdin = json.dumps(conf).encode()
    executed = invoke.run(os.path.join(source_bin, "static"), env, stdin, io.StringIO())
    program = os.path.join(source_bin, "static")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", program)
    monkeypatch.setattr(libcni, "SIBLINGS", {"static": "ipam.static.static"})
    assert invoke.sibling_module(program) == "ipam.static.static"
    in_process = invoke.run(program, env, stdin, io.StringIO())
    assert in_process == executed
    bad = json.dumps(dict(conf, ipam={"type": "static", "addresses": [{"address": "x"}]}))
    with pytest.raises(invoke.CNIError) as err:
        invoke.run(program, env, bad.encode(), io.StringIO())
    assert err.value.code != 0 and "x" in err.value.msg
