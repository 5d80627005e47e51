"""libcni.kernel.links helpers, called in-process against namespaces the tests own (through a
kernel session on their path, so nothing ever happens in the test runner's own netns)."""

import os
import re

import pytest
from conftest import ns_exec

from libcni.kernel import linkcheck, links, macaddr
from libcni.kernel.session import Session
from libcni.protocol.errors import CNIError
from libcni.protocol.result import Result
from libcni.rollback import Rollback
from plugins.host_device import move


def test_temp_name_is_veth_and_eight_hex_digits():
    names = {links.temp_name() for _ in range(20)}
    assert all(re.fullmatch(r"veth[0-9a-f]{8}", n) for n in names)
    assert len(names) == 20


@pytest.mark.parametrize(
    "text",
    ["0A:58:0a:f4:00:05", "0a-58-0a-f4-00-05", "0a58.0af4.0005"],
)
def test_parse_mac_accepts_go_forms(text):
    assert macaddr.parse_mac(text, "test") == "0a:58:0a:f4:00:05"


@pytest.mark.parametrize("text", ["", "0a:58:0a:f4:00", "0a:58:0a:f4:00:zz", "0a:58-0a:f4:00:05"])
def test_parse_mac_rejects_malformed(text):
    with pytest.raises(CNIError) as caught:
        macaddr.parse_mac(text, 'config "mac"')
    assert caught.value.msg == f'invalid MAC address "{text}" in config "mac"'


def test_parse_mac_rejects_multicast():
    with pytest.raises(CNIError, match="multicast"):
        macaddr.parse_mac("01:00:5e:00:00:01", "test")


def test_strerror_words_errors_like_go():
    assert links.strerror(OSError(17, "File exists")) == "file exists"


@pytest.fixture
def routed(netns):
    ns_exec(netns, "ip", "link", "add", "up0", "type", "veth", "peer", "up1")
    ns_exec(netns, "ip", "link", "set", "up0", "up")
    ns_exec(netns, "ip", "link", "set", "up1", "up")
    return netns


def default_route_interface(netns_path):
    with Session(netns_path) as session:
        return links.default_route_interface(session)


def lookup(netns_path, name):
    with Session(netns_path) as session:
        return session.link(name)


def delete(netns_path, name):
    session = Session.existing(netns_path)
    if session is None:
        return False
    with session:
        return links.delete(session, name)


def test_default_route_interface_prefers_ipv4(routed):
    ns_exec(routed, "ip", "addr", "add", "10.90.0.2/24", "dev", "up1")
    ns_exec(routed, "ip", "route", "add", "default", "via", "10.90.0.1")
    ns_exec(routed, "ip", "-6", "route", "add", "default", "dev", "up0")
    assert default_route_interface(routed) == "up1"


def test_default_route_interface_falls_back_to_ipv6(routed):
    ns_exec(routed, "ip", "-6", "route", "add", "default", "dev", "up0")
    assert default_route_interface(routed) == "up0"


def test_default_route_interface_ignores_other_tables(routed):
    ns_exec(routed, "ip", "route", "add", "default", "dev", "up0", "table", "100")
    with pytest.raises(CNIError) as caught:
        default_route_interface(routed)
    assert caught.value.msg == "no default route interface found"
    assert "container netns" in caught.value.details


def test_lookup_reads_kind_mtu_and_state(routed):
    found = lookup(routed, "up0")
    assert (found.kind, found.mtu, found.up) == ("veth", 1500, True)
    assert lookup(routed, "nosuch0") is None
    assert lookup(routed, "x" * 20) is None


def test_delete_reports_whether_something_was_removed(routed, tmp_path):
    assert delete(routed, "up0") is True
    assert lookup(routed, "up1") is None  # the veth peer went with it
    assert delete(routed, "up0") is False
    assert delete(str(tmp_path / "gone"), "up0") is False
    assert delete("", "up0") is False


def test_rollback_of_a_link_removes_it_and_reraises(routed):
    with pytest.raises(RuntimeError):
        with Session(routed) as session, Rollback() as undo:
            undo.push(session.delete_link, session.require("up0"))
            raise RuntimeError("later step failed")
    assert lookup(routed, "up0") is None


def test_rollback_of_a_link_keeps_it_on_success(routed):
    with Session(routed) as session, Rollback() as undo:
        undo.push(session.delete_link, session.require("up0"))
    assert lookup(routed, "up0") is not None


def test_rollback_undoes_newest_first_only_on_failure():
    done = []
    with Rollback() as undo:
        undo.push(done.append, "kept")
    assert done == []
    with pytest.raises(ValueError):
        with Rollback() as undo:
            undo.push(done.append, "first")
            undo.push(lambda: 1 / 0)  # a failing undo step does not stop the others
            undo.push(done.append, "second")
            raise ValueError
    assert done == ["second", "first"]


def test_temporary_netns_is_a_new_netns_and_goes_away():
    here = os.stat("/proc/thread-self/ns/net").st_ino
    with move.temporary_netns() as fd:
        assert os.fstat(fd).st_ino != here
        kept = fd
    with pytest.raises(OSError):
        os.fstat(kept)


def result_with(netns, **extra):
    result = Result("1.0.0")
    result.add_interface("up1", sandbox=netns)
    for key, value in extra.items():
        setattr(result, key, value)
    return result


def test_container_interface_matches_name_and_sandbox(routed):
    result = result_with(routed)
    assert linkcheck.container_interface(result, "up1", routed)["name"] == "up1"
    with pytest.raises(CNIError, match="doesn't match configured netns"):
        linkcheck.container_interface(result, "up1", "/var/run/netns/other")


def test_check_addresses_and_routes(routed):
    ns_exec(routed, "ip", "addr", "add", "10.90.0.2/24", "dev", "up1")
    ns_exec(routed, "ip", "route", "add", "10.91.0.0/16", "via", "10.90.0.1")
    good = result_with(
        routed,
        ips=[{"address": "10.90.0.2/24", "interface": 0}],
        routes=[{"dst": "10.91.0.0/16", "gw": "10.90.0.1"}, {"dst": "10.90.0.0/24"}],
    )
    with Session(routed) as session:
        up1 = session.require("up1")
        linkcheck.check_addresses(session, up1, good)
        linkcheck.check_routes(session, good.routes)
        with pytest.raises(CNIError, match="Failed to match addr 10.90.0.3/24"):
            wrong = result_with(routed, ips=[{"address": "10.90.0.3/24"}])
            linkcheck.check_addresses(session, up1, wrong)
        with pytest.raises(CNIError, match="Expected Route 10.91.0.0/16 via 10.90.0.9 not found"):
            linkcheck.check_routes(session, [{"dst": "10.91.0.0/16", "gw": "10.90.0.9"}])


def test_check_addresses_skips_ips_of_other_interfaces(routed):
    result = result_with(routed, ips=[{"address": "10.92.0.2/24", "interface": 1}])
    result.add_interface("other0")
    with Session(routed) as session:
        linkcheck.check_addresses(session, session.require("up1"), result)


def test_check_interface_compares_kind_and_mac(routed):
    mac = lookup(routed, "up1").mac
    entry = {"name": "up1", "mac": mac, "sandbox": routed}
    with Session(routed) as session:
        assert linkcheck.check_interface(session, entry, "veth").name == "up1"
        with pytest.raises(CNIError, match="not of type macvlan"):
            linkcheck.check_interface(session, entry, "macvlan")
        with pytest.raises(CNIError, match="doesn't match container Mac"):
            linkcheck.check_interface(session, dict(entry, mac="0a:00:00:00:00:01"), None)
