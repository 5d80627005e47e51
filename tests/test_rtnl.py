"""The minimal rtnetlink client, against a real netns."""

from conftest import ns_exec

from libcni.rtnl import RouteSocket


def test_missing_link_is_none(netns):
    with RouteSocket(netns) as sock:
        assert sock.link("nope0") is None


def test_set_up_and_down(netns):
    with RouteSocket(netns) as sock:
        lo = sock.link("lo")
        assert lo.index == 1 and not lo.up
        sock.set_up(lo.index, True)
        assert sock.link("lo").up
        sock.set_up(lo.index, False)
        assert not sock.link("lo").up


def test_addresses_ipv4_first_with_prefix(netns):
    ns_exec(netns, "ip", "link", "set", "lo", "up")
    ns_exec(netns, "ip", "addr", "add", "127.0.0.9/32", "dev", "lo")
    with RouteSocket(netns) as sock:
        assert sock.addresses(1) == ["127.0.0.1/8", "127.0.0.9/32", "::1/128"]


def test_socket_stays_in_its_netns(netns):
    # A veth created in the test netns is visible through the socket, not in ours.
    ns_exec(netns, "ip", "link", "add", "pv0", "type", "veth", "peer", "name", "pv1")
    with RouteSocket(netns) as sock:
        assert sock.link("pv0") is not None
    with RouteSocket() as sock:
        assert sock.link("pv0") is None
