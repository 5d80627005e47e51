"""The minimal rtnetlink client, against a real netns."""

from conftest import ns_exec

from libcni.kernel.rtnl import RouteSocket


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


def test_veth_pair_with_peer_in_another_netns(make_netns):
    import os

    inside, outside = make_netns(), make_netns()
    fd = os.open(outside, os.O_RDONLY)
    try:
        with RouteSocket(inside) as sock:
            sock.add_link(
                "eth0",
                "veth",
                mtu=1400,
                mac="0a:58:00:00:00:01",
                peer=RouteSocket.veth_peer("vethx", netns_fd=fd, mtu=1400),
            )
            eth0 = sock.link("eth0")
    finally:
        os.close(fd)
    assert eth0.kind == "veth" and eth0.mtu == 1400 and eth0.mac == "0a:58:00:00:00:01"
    with RouteSocket(outside) as sock:
        peer = sock.link("vethx")
    assert peer.kind == "veth" and peer.mtu == 1400 and eth0.peer == peer.index


def test_bridge_port_flags_addresses_and_routes(netns):
    with RouteSocket(netns) as sock:
        sock.add_link("br9", "bridge")
        sock.add_link("p9", "veth", peer=RouteSocket.veth_peer("q9"))
        br, port = sock.link("br9"), sock.link("p9")
        sock.set_link(port.index, master=br.index, up=True)
        flags = RouteSocket.bridge_port_data(hairpin=True, isolated=True)
        sock.set_link(port.index, port_data=flags)
        sock.set_link(br.index, up=True)
        sock.add_address(br.index, "10.9.0.1", 24)
        sock.route("add", "10.8.0.0", 16, oif=br.index, gateway="10.9.0.7")
        assert sock.link("p9").master == br.index
        assert sock.address_flags(br.index, 2)[0][:2] == ("10.9.0.1", 24)
        assert ("10.8.0.0/16", 254, ["10.9.0.7"]) in sock.routes(2)
    detail = ns_exec(netns, "ip", "-d", "link", "show", "p9")
    assert "hairpin on" in detail and "isolated on" in detail
    assert "brd 10.9.0.255" in ns_exec(netns, "ip", "addr", "show", "br9")
