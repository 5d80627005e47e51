"""Finding and decoding network configs in a directory, as upstream libcni's loader does."""

import json
import os

import pytest

from libcni.protocol.errors import INVALID_NETWORK_CONFIG, CNIError
from libcni.runtime import conflist


def write(directory, filename, obj) -> str:
    path = os.path.join(str(directory), filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def netlist(name="net", version="1.0.0", *types, **extra):
    obj = {"cniVersion": version, "name": name, "plugins": [{"type": t} for t in types or ["a"]]}
    obj.update(extra)
    return obj


def load_obj(obj) -> conflist.NetworkList:
    return conflist.list_from_bytes(json.dumps(obj).encode(), "test.conflist")


# -- finding a network ----------------------------------------------------------------------


def test_conflist_files_are_searched_in_byte_order_of_their_names(tmp_path):
    write(tmp_path, "9-a.conflist", netlist("net", "1.0.0", "second"))
    write(tmp_path, "10-b.conflist", netlist("net", "1.0.0", "first"))
    found = conflist.load_network(str(tmp_path), "net")
    assert [p.type for p in found.plugins] == ["first"]
    assert found.path == str(tmp_path / "10-b.conflist")


def test_conflist_wins_over_a_single_conf_of_the_same_name(tmp_path):
    write(tmp_path, "00-net.conf", {"cniVersion": "1.0.0", "name": "net", "type": "single"})
    write(tmp_path, "99-net.conflist", netlist("net", "1.0.0", "listed"))
    assert [p.type for p in conflist.load_network(str(tmp_path), "net").plugins] == ["listed"]


def test_single_conf_is_wrapped_into_a_one_plugin_list(tmp_path):
    conf = {"type": "bridge", "name": "net", "cniVersion": "0.4.0", "bridge": "br<0>"}
    write(tmp_path, "10-net.conf", conf)
    found = conflist.load_network(str(tmp_path), "net")
    assert (found.name, found.cni_version) == ("net", "0.4.0")
    assert [p.conf for p in found.plugins] == [conf]
    # The bytes a runtime caches are the re-encoded list (Go map order and escapes).
    assert found.raw == (
        b'{"cniVersion":"0.4.0","name":"net","plugins":[{"bridge":"br\\u003c0\\u003e",'
        b'"cniVersion":"0.4.0","name":"net","type":"bridge"}]}'
    )


def test_json_extension_holds_a_single_conf(tmp_path):
    write(tmp_path, "net.json", {"cniVersion": "1.0.0", "name": "net", "type": "x"})
    assert conflist.load_network(str(tmp_path), "net").plugins[0].type == "x"


def test_other_extensions_and_directories_are_ignored(tmp_path):
    write(tmp_path, "net.txt", netlist("net"))
    os.mkdir(tmp_path / "dir.conflist")
    write(tmp_path, "other.conflist", netlist("other"))
    with pytest.raises(conflist.NetworkNotFound) as caught:
        conflist.load_network(str(tmp_path), "net")
    assert caught.value.msg == f'no net configuration with name "net" in {tmp_path}'
    assert caught.value.details == 'networks found: "other" (other.conflist)'


def test_empty_or_missing_directory_has_no_configurations(tmp_path):
    for directory in (tmp_path, tmp_path / "missing"):
        with pytest.raises(conflist.NetworkNotFound) as caught:
            conflist.load_network(str(directory), "net")
        assert caught.value.msg == f"no net configurations found in {directory}"
        assert caught.value.code == INVALID_NETWORK_CONFIG


def test_list_raw_bytes_are_the_file_bytes(tmp_path):
    text = '{ "name": "net",\n  "cniVersion": "1.0.0", "plugins": [{"type": "a"}] }\n'
    write(tmp_path, "net.conflist", text)
    assert conflist.load_network(str(tmp_path), "net").raw == text.encode()


# -- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.1.0"]}, "1.1.0"),
        ({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "2.0.0"]}, "1.0.0"),
        ({"cniVersions": ["0.3.1", "1.0.0"]}, "1.0.0"),
        ({"cniVersion": "9.9.9", "cniVersions": ["0.4.0"]}, "0.4.0"),
        ({"cniVersions": ["2.0.0"]}, ""),
        ({"cniVersion": "9.9.9"}, "9.9.9"),
        ({}, ""),
    ],
)
def test_list_version_is_the_highest_implemented_of_cniversion_and_cniversions(fields, expected):
    obj = {"name": "net", "plugins": [{"type": "a"}], **fields}
    assert load_obj(obj).cni_version == expected


@pytest.mark.parametrize(
    "versions_value, problem",
    [
        (["1.0.0", 1], "cniVersions[1] must be a string"),
        (["1.0.0", "one"], 'cniVersions[1] "one" is not a version'),
        ("1.0.0", '"cniVersions" must be an array of strings'),
    ],
)
def test_bad_cniversions_are_errors(versions_value, problem):
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj({"name": "net", "cniVersions": versions_value, "plugins": [{"type": "a"}]})
    assert caught.value.msg.startswith(f"test.conflist: {problem}")


# -- list switches --------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(True, True), ("True", True), ("false", False)])
def test_switches_accept_booleans_and_their_strings(value, expected):
    loaded = load_obj(netlist(disableCheck=value, disableGC=value))
    assert (loaded.disable_check, loaded.disable_gc) == (expected, expected)


@pytest.mark.parametrize("value", ["yes", 1])
def test_switch_with_another_value_is_an_error(value):
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj(netlist(disableCheck=value))
    assert caught.value.msg == (
        f'test.conflist: "disableCheck" must be true or false, found {json.dumps(value)}'
    )


def test_inlined_only_list_needs_plugins():
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj({"name": "net", "loadOnlyInlinedPlugins": True})
    assert 'no "plugins" array' in caught.value.msg


def test_plugin_files_of_the_network_directory_are_appended(tmp_path):
    write(tmp_path, "net.conflist", netlist("net", "1.0.0", "inline"))
    write(tmp_path, "net/20-second.conf", {"type": "second"})
    write(tmp_path, "net/10-first.conf", {"type": "first"})
    write(tmp_path, "net/30-ignored.json", {"type": "ignored"})
    found = conflist.load_network(str(tmp_path), "net")
    assert [p.type for p in found.plugins] == ["inline", "first", "second"]


def test_inlined_only_list_ignores_the_network_directory(tmp_path):
    write(tmp_path, "net.conflist", netlist("net", "1.0.0", "inline", loadOnlyInlinedPlugins=True))
    write(tmp_path, "net/10-first.conf", {"type": "first"})
    assert [p.type for p in conflist.load_network(str(tmp_path), "net").plugins] == ["inline"]


def test_list_without_any_plugin_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, "net.conflist", {"name": "net", "cniVersion": "1.0.0"})
    with pytest.raises(conflist.ConfigError) as caught:
        conflist.load_network(str(tmp_path), "net")
    assert caught.value.msg == f"{path}: no plugin configs found"


# -- broken files ---------------------------------------------------------------------------


def test_empty_plugins_array_is_an_error():
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj({"name": "net", "plugins": []})
    assert caught.value.msg == 'test.conflist: "plugins" is empty'


@pytest.mark.parametrize(
    "plugin, problem",
    [
        ({"name": "x"}, 'missing "type"'),
        ({"type": 5}, '"type" must be a string, found number 5'),
        ({"type": "a", "capabilities": {"portMappings": "yes"}}, 'capability "portMappings"'),
        ("bridge", "a plugin must be a JSON object, found string"),
    ],
)
def test_broken_plugin_is_named_by_file_and_index(plugin, problem):
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj({"name": "net", "plugins": [{"type": "ok"}, plugin]})
    assert caught.value.msg.startswith(f"test.conflist: plugins[1]: {problem}")
    assert caught.value.code == INVALID_NETWORK_CONFIG


def test_file_that_is_not_json_is_named_in_the_error(tmp_path):
    path = write(tmp_path, "10-bad.conflist", '{"name": "net",')
    with pytest.raises(conflist.ConfigError) as caught:
        conflist.load_network(str(tmp_path), "net")
    assert caught.value.msg.startswith(f"{path}: not valid JSON: ")


def test_list_without_a_name_is_an_error():
    with pytest.raises(conflist.ConfigError) as caught:
        load_obj({"plugins": [{"type": "a"}]})
    assert caught.value.msg == 'test.conflist: missing "name"'


def test_broken_file_sorted_before_the_network_aborts_the_search(tmp_path):
    # Upstream stops at the first file it cannot load; we do too, but say which one.
    bad = write(tmp_path, "10-bad.conflist", {"name": "bad", "plugins": []})
    write(tmp_path, "20-net.conflist", netlist("net"))
    with pytest.raises(CNIError) as caught:
        conflist.load_network(str(tmp_path), "net")
    assert caught.value.msg.startswith(bad)


def test_list_in_a_conf_file_gets_a_rename_hint(tmp_path):
    path = write(tmp_path, "10-net.conf", netlist("net"))
    with pytest.raises(conflist.ConfigError) as caught:
        conflist.load_network(str(tmp_path), "net")
    assert caught.value.msg == f'{path}: has a "plugins" array but is not named *.conflist'


# -- a file given directly ------------------------------------------------------------------


def test_load_file_reads_a_list_whatever_its_extension(tmp_path):
    path = write(tmp_path, "mine.json", netlist("net", "1.0.0", "a", "b"))
    assert [p.type for p in conflist.load_file(path).plugins] == ["a", "b"]


def test_load_file_wraps_a_single_plugin(tmp_path):
    path = write(tmp_path, "mine.conf", {"cniVersion": "0.3.1", "name": "solo", "type": "a"})
    loaded = conflist.load_file(path)
    assert (loaded.name, loaded.cni_version, len(loaded.plugins)) == ("solo", "0.3.1", 1)
