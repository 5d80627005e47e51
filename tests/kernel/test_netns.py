"""Network namespace helpers: entering is per thread and always undone."""

import os
import threading

import pytest
from conftest import ns_exec

from libcni.kernel import netns as nsmod
from libcni.protocol.errors import CNIError


def current():
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_enter_and_return(netns):
    before = current()
    with nsmod.entered(netns):
        assert current() == os.stat(netns).st_ino
    assert current() == before


def test_return_even_when_the_block_raises(netns):
    before = current()
    with pytest.raises(RuntimeError), nsmod.entered(netns):
        raise RuntimeError("boom")
    assert current() == before


def test_other_threads_stay_where_they_are(netns):
    seen = {}
    inside = threading.Event()
    checked = threading.Event()

    def other():
        inside.wait(10)
        seen["other"] = current()
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    before = current()
    with nsmod.entered(netns):
        inside.set()
        checked.wait(10)
    thread.join(10)
    assert seen["other"] == before


def test_work_inside_sees_the_namespace(netns):
    ns_exec(netns, "ip", "link", "add", "nsx0", "type", "veth", "peer", "name", "nsx1")
    with nsmod.entered(netns):
        with open("/proc/thread-self/net/dev") as f:
            assert "nsx0" in f.read()
    with open("/proc/thread-self/net/dev") as f:
        assert "nsx0" not in f.read()


def test_missing_path_is_netns_missing(tmp_path):
    with pytest.raises(nsmod.NetnsMissing) as err:
        nsmod.open_netns(str(tmp_path / "gone"))
    assert "failed to open netns" in err.value.msg


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_non_netns_paths_are_refused(tmp_path, kind):
    path = tmp_path / "x"
    path.mkdir() if kind == "dir" else path.write_text("")
    with pytest.raises(CNIError) as err:
        nsmod.open_netns(str(path))
    assert err.value.msg == f'"{path}" is not a network namespace'


def test_other_namespace_kinds_are_refused():
    with pytest.raises(CNIError, match="not a network namespace"):
        nsmod.open_netns("/proc/self/ns/mnt")


def test_is_current_netns(netns):
    assert netns_is_current("/proc/self/ns/net")
    assert not netns_is_current(netns)
    assert not netns_is_current("/nonexistent")


def netns_is_current(path):
    return nsmod.is_current_netns(path)
