"""libcni.kernel.session: one netns, one rtnetlink socket, Link objects kept current."""

import os

import pytest
from conftest import ns_exec

from libcni.kernel import sysctl
from libcni.kernel.session import Session
from libcni.protocol.errors import CNIError


def test_require_names_the_missing_link(netns):
    with Session(netns) as session:
        assert session.link("nope0") is None
        assert session.link("x" * 20) is None  # longer than IFNAMSIZ: never sent
        with pytest.raises(CNIError) as caught:
            session.require("nope0")
        assert caught.value.msg == 'failed to lookup "nope0": link not found'
        with pytest.raises(CNIError) as caught:
            session.require("nope0", "no such thing", "make one")
        assert (caught.value.msg, caught.value.details) == ("no such thing", "make one")


def test_set_link_updates_the_link_it_was_given(netns):
    with Session(netns) as session:
        session.create_link("br7", "bridge")
        bridge = session.require("br7")
        session.set_link(
            bridge, "could not", up=True, name="br8", mtu=1400, mac="0A:58:00:00:00:07"
        )
        assert (bridge.name, bridge.mtu, bridge.mac, bridge.up) == (
            "br8",
            1400,
            "0a:58:00:00:00:07",
            True,
        )
        fresh = session.link_by_index(bridge.index)
        assert (fresh.name, fresh.mtu, fresh.mac) == ("br8", 1400, "0a:58:00:00:00:07")


def test_set_link_refusal_is_a_cni_error_with_the_callers_words(netns):
    ns_exec(netns, "ip", "link", "add", "taken0", "type", "bridge")
    with Session(netns) as session:
        session.create_link("br7", "bridge")
        bridge = session.require("br7")
        with pytest.raises(CNIError) as caught:
            session.set_link(bridge, 'failed to rename "br7"', exists="pick another", name="taken0")
        assert caught.value.msg == 'failed to rename "br7": file exists'
        assert caught.value.details == "pick another"
        assert bridge.name == "br7"  # unchanged when the kernel refused


def test_refresh_rereads_by_index(netns):
    with Session(netns) as session:
        lo = session.require("lo")
        ns_exec(netns, "ip", "link", "set", "lo", "up")
        assert not lo.up
        assert session.refresh(lo) is lo and lo.up


def test_delete_link_tolerates_a_gone_link(netns):
    with Session(netns) as session:
        session.create_link("br7", "bridge")
        bridge = session.require("br7")
        assert session.delete_link(bridge) is True
        assert session.delete_link(bridge) is False


def test_existing_is_none_without_a_netns(tmp_path):
    assert Session.existing("") is None
    assert Session.existing(str(tmp_path / "gone")) is None


def test_inside_reaches_the_netns_sysctls_and_comes_back(netns):
    ns_exec(netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    here = os.stat("/proc/thread-self/ns/net").st_ino
    with Session(netns) as session:
        with session.inside():
            assert sysctl.read("net/ipv4/ip_forward") == "1"
            assert os.stat("/proc/thread-self/ns/net").st_ino != here
    assert os.stat("/proc/thread-self/ns/net").st_ino == here


def test_shared_does_not_close(netns):
    with Session(netns) as session:
        with session.shared() as same:
            assert same is session
        assert session.require("lo").index == 1


def test_audit_sees_opens_and_lookups_by_name(netns):
    seen = []
    Session.audit = lambda *event: seen.append(event)
    try:
        with Session(netns) as session:
            session.link("lo")
            session.link_by_index(1)
    finally:
        Session.audit = None
    assert seen == [("open", netns), ("lookup", netns, "lo")]
