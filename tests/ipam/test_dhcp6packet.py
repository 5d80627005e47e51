"""dhcp6packet: DHCPv6 messages to bytes and back, against packets laid out per RFC 8415.

The Reply below is the one dnsmasq 2.90 sent to a Rapid Commit Solicit in tests/ipam/test_dhcp6.py
(its --log-dhcp lines list every option and value), assembled field by field from RFC 8415's
layouts (sections 8, 21.2-21.6, 21.13, 21.14) and RFC 3646's options 23 and 24.
"""

import pytest

from ipam.dhcp import dhcp6packet as p6


def wire(*fields: str) -> bytes:
    """Bytes from hex fields, one line per field as the RFC draws it (spaces ignored)."""
    return bytes.fromhex("".join(fields).replace(" ", ""))


CLIENT_DUID = "0004 64fefc2fa5a653dca8806d04db6a109a"  # DUID-UUID: type 4, 16 bytes
SERVER_DUID = "0001 0001 32a8f24d 4246138d8db2"  # DUID-LLT: type 1, hw 1, time, MAC
DNSMASQ_REPLY = wire(
    "07 4b10af",  # msg-type Reply, transaction-id 4919471
    "0001 0012 " + CLIENT_DUID,  # OPTION_CLIENTID
    "0002 000e " + SERVER_DUID,  # OPTION_SERVERID
    "000e 0000",  # OPTION_RAPID_COMMIT
    "0003 0028",  # OPTION_IA_NA, 40 bytes
    "338f5909 0000003c 00000069",  # IAID 865032457, T1 60, T2 105
    "0005 0018",  # OPTION_IAADDR, 24 bytes
    "fd66000000000000000000000000003c 00000078 00000078",  # fd66::3c, PL 120, VL 120
    "000d 0009 0000 73756363657373",  # OPTION_STATUS_CODE Success "success"
    "0007 0001 ff",  # OPTION_PREFERENCE 255
    "0018 000d 03736978 076578616d706c65 00",  # OPTION_DOMAIN_LIST six.example
    "0017 0010 fd660000000000000000000000000053",  # OPTION_DNS_SERVERS fd66::53
)


def test_decodes_dnsmasqs_rapid_commit_reply():
    msg = p6.Message.decode(DNSMASQ_REPLY)
    assert (msg.kind, msg.xid) == (p6.REPLY, 4919471)
    assert msg.option(p6.CLIENT_ID) == wire(CLIENT_DUID)
    assert msg.option(p6.SERVER_ID) == wire(SERVER_DUID)
    assert msg.option(p6.RAPID_COMMIT) == b""
    assert msg.status() == (p6.SUCCESS, "success")
    ia = msg.ia_na()
    assert ia is not None
    assert (ia.iaid, ia.t1, ia.t2) == (865032457, 60, 105)
    assert ia.addresses == [("fd66::3c", 120, 120)] and ia.status == (p6.SUCCESS, "")
    assert p6.addresses(msg.option(p6.DNS_SERVERS)) == ["fd66::53"]
    assert p6.domains(msg.option(p6.DOMAIN_LIST)) == ["six.example"]
    # Encoding what was decoded gives the same bytes back.
    assert msg.encode() == DNSMASQ_REPLY


def test_encodes_a_solicit_byte_for_byte():
    duid = wire(CLIENT_DUID)
    msg = p6.Message(
        p6.SOLICIT,
        0x123456,
        [
            (p6.CLIENT_ID, duid),
            p6.ia_na(7),
            p6.elapsed(0),
            p6.oro(p6.DNS_SERVERS, p6.DOMAIN_LIST),
            (p6.RAPID_COMMIT, b""),
        ],
    )
    assert msg.encode() == wire(
        "01 123456",  # Solicit
        "0001 0012 " + CLIENT_DUID,
        "0003 000c 00000007 00000000 00000000",  # IA_NA: IAID 7, T1 and T2 left to the server
        "0008 0002 0000",  # elapsed time 0
        "0006 0004 0017 0018",  # ORO: DNS servers, domain list
        "000e 0000",  # Rapid Commit
    )
    request = p6.Message(p6.REQUEST, 1, [p6.ia_na(7, ["fd66::3c"])]).encode()
    ia = p6.Message.decode(request).ia_na()
    assert ia is not None and ia.addresses == [("fd66::3c", 0, 0)]


def test_what_a_server_refuses():
    no_addrs = p6.IANA(9, 0, 0, [], (p6.NO_ADDRS_AVAIL, "none left")).encode()
    # An IA_NA status is in the IA's own options (encode() has no place for it: build it).
    status = wire("000d 000b 0002") + b"none left"
    msg = p6.Message(p6.ADVERTISE, 5, [(p6.IA_NA, no_addrs[:12] + status)])
    ia = msg.ia_na()
    assert ia is not None and ia.addresses == [] and ia.status == (p6.NO_ADDRS_AVAIL, "none left")
    # An address carrying a failure status of its own is not handed out.
    inner = wire("fd66000000000000000000000000003c 00000078 00000078")
    inner += wire("000d 0002 0004")  # NotOnLink
    raw = wire("00000009 00000000 00000000 0005") + len(inner).to_bytes(2, "big")
    decoded = p6.IANA.decode(raw + inner)
    assert decoded is not None and decoded.addresses == []


def test_malformed_input_never_raises_past_the_header():
    with pytest.raises(ValueError):
        p6.Message.decode(b"\x07\x00")
    truncated = p6.Message.decode(DNSMASQ_REPLY[:-3])  # the last option cut short
    assert truncated.option(p6.DNS_SERVERS) is None
    assert truncated.option(p6.DOMAIN_LIST) is not None
    assert p6.IANA.decode(b"\x00" * 11) is None
    assert p6.domains(b"\x09abc") == [] and p6.addresses(b"\x00" * 15) == []


def test_duid_and_iaid_are_stable_per_attachment():
    duid = p6.duid_uuid("ctr/net/eth0")
    assert duid[:2] == b"\x00\x04" and len(duid) == 18
    assert duid == p6.duid_uuid("ctr/net/eth0") != p6.duid_uuid("ctr/net/eth1")
    assert p6.iaid_of("ctr/net/eth0") == p6.iaid_of("ctr/net/eth0") != p6.iaid_of("x/net/eth0")
