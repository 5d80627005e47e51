"""DHCPv6 messages (RFC 8415) as bytes and back: the client's side of stateful IA_NA.

Plain Python, no library: the part of DHCPv6 a client for one address needs is small (a 4-byte
header and type-length-value options, IA_NA holding IAADDR and status codes), and no maintained
Python DHCPv6 library is both small and current (pyroute2, which our DHCPv4 client uses, speaks
DHCPv4 only). Decoding never raises on what a server sends: a malformed option ends the list.

    msg = Message(SOLICIT, xid, [client_id(duid), ia_na(iaid), elapsed(0), oro(DNS, DOMAINS)])
    wire = msg.encode();  Message.decode(wire).option(SERVER_ID)
"""

import ipaddress
import struct
import uuid

# Message types (RFC 8415 section 7.3).
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
NAMES = {
    SOLICIT: "Solicit",
    ADVERTISE: "Advertise",
    REQUEST: "Request",
    CONFIRM: "Confirm",
    RENEW: "Renew",
    REBIND: "Rebind",
    REPLY: "Reply",
    RELEASE: "Release",
    DECLINE: "Decline",
}
# Options (section 21; 23 and 24 from RFC 3646).
CLIENT_ID, SERVER_ID, IA_NA, IA_ADDR, ORO, PREFERENCE, ELAPSED_TIME = 1, 2, 3, 5, 6, 7, 8
STATUS_CODE, RAPID_COMMIT, DNS_SERVERS, DOMAIN_LIST = 13, 14, 23, 24
# Status codes (section 21.13).
SUCCESS, UNSPEC_FAIL, NO_ADDRS_AVAIL, NO_BINDING, NOT_ON_LINK, USE_MULTICAST = range(6)
STATUS_NAMES = {
    SUCCESS: "Success",
    UNSPEC_FAIL: "UnspecFail",
    NO_ADDRS_AVAIL: "NoAddrsAvail",
    NO_BINDING: "NoBinding",
    NOT_ON_LINK: "NotOnLink",
    USE_MULTICAST: "UseMulticast",
}
DUID_UUID = 4  # RFC 6355
CLIENT_PORT, SERVER_PORT = 546, 547
ALL_SERVERS = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers
INFINITY = 0xFFFFFFFF
# A name space of our own for the attachment UUIDs (uuid5 of the attachment key).
DUID_NAMESPACE = uuid.UUID("5c0f3d5e-8f6a-4d43-9a43-63e1a6f0c3d1")


class Message:
    """One DHCPv6 message: type, 24-bit transaction id, options as [(code, value bytes)]."""

    def __init__(self, kind: int, xid: int, options: list | None = None):
        self.kind = kind
        self.xid = xid & 0xFFFFFF
        self.options: list = list(options or [])

    def encode(self) -> bytes:
        return struct.pack("!I", (self.kind << 24) | self.xid) + encode_options(self.options)

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        if len(data) < 4:
            raise ValueError("a DHCPv6 message has at least 4 bytes")
        (head,) = struct.unpack_from("!I", data)
        return cls(head >> 24, head & 0xFFFFFF, decode_options(data[4:]))

    def option(self, code: int) -> bytes | None:
        """The first option `code`'s value, or None."""
        return next((value for c, value in self.options if c == code), None)

    def status(self) -> tuple:
        """(status code, message) of the top-level Status Code option (Success if absent)."""
        return decode_status(self.option(STATUS_CODE))

    def ia_na(self) -> "IANA | None":
        raw = self.option(IA_NA)
        return IANA.decode(raw) if raw is not None else None

    def __repr__(self) -> str:
        codes = ",".join(str(code) for code, _ in self.options)
        return f"<{NAMES.get(self.kind, self.kind)} xid={self.xid:06x} options={codes}>"


def encode_options(options: list) -> bytes:
    return b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)


def decode_options(data: bytes) -> list:
    options, at = [], 0
    while at + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, at)
        if at + 4 + length > len(data):
            break  # truncated: keep what was whole
        options.append((code, bytes(data[at + 4 : at + 4 + length])))
        at += 4 + length
    return options


def decode_status(raw: bytes | None) -> tuple:
    if raw is None or len(raw) < 2:
        return SUCCESS, ""
    return struct.unpack_from("!H", raw)[0], raw[2:].decode("utf-8", "replace")


class IANA:
    """An Identity Association for Non-temporary Addresses: IAID, T1, T2, its addresses
    [(address, preferred, valid)] and its own status."""

    def __init__(self, iaid: int, t1: int = 0, t2: int = 0, addresses=(), status=(SUCCESS, "")):
        self.iaid, self.t1, self.t2 = iaid, t1, t2
        self.addresses: list = list(addresses)
        self.status: tuple = status

    def encode(self) -> bytes:
        inner = [
            (IA_ADDR, ipaddress.IPv6Address(a).packed + struct.pack("!II", pref, valid))
            for a, pref, valid in self.addresses
        ]
        return struct.pack("!III", self.iaid, self.t1, self.t2) + encode_options(inner)

    @classmethod
    def decode(cls, raw: bytes) -> "IANA | None":
        if len(raw) < 12:
            return None
        iaid, t1, t2 = struct.unpack_from("!III", raw)
        addresses, status = [], (SUCCESS, "")
        for code, value in decode_options(raw[12:]):
            if code == STATUS_CODE:
                status = decode_status(value)
            elif code == IA_ADDR and len(value) >= 24:
                address = str(ipaddress.IPv6Address(value[:16]))
                preferred, valid = struct.unpack_from("!II", value, 16)
                # An address with its own non-success status is not given to us.
                if decode_status(dict(decode_options(value[24:])).get(STATUS_CODE))[0] == SUCCESS:
                    addresses.append((address, preferred, valid))
        return cls(iaid, t1, t2, addresses, status)


# -- the options a client sends ------------------------------------------------------------------


def duid_uuid(key: str) -> bytes:
    """DUID-UUID (RFC 6355) of an attachment: the same key (container ID, network, interface)
    gives the same DUID across daemon restarts, so the server hands back the same address."""
    return struct.pack("!H", DUID_UUID) + uuid.uuid5(DUID_NAMESPACE, key).bytes


def iaid_of(key: str) -> int:
    """A stable IAID for the attachment's one IA_NA (its DUID is the attachment's own)."""
    return int.from_bytes(uuid.uuid5(DUID_NAMESPACE, "iaid:" + key).bytes[:4], "big")


def ia_na(iaid: int, addresses=()) -> tuple:
    """IA_NA as a client sends it: T1 and T2 zero (the server chooses), addresses to ask for
    with zero lifetimes (RFC 8415 section 18.2: the client's lifetimes are ignored)."""
    return IA_NA, IANA(iaid, 0, 0, [(a, 0, 0) for a in addresses]).encode()


def elapsed(hundredths: int) -> tuple:
    return ELAPSED_TIME, struct.pack("!H", max(0, min(hundredths, 0xFFFF)))


def oro(*codes: int) -> tuple:
    return ORO, b"".join(struct.pack("!H", c) for c in codes)


# -- what a Reply's options mean -------------------------------------------------------------------


def addresses(raw: bytes | None) -> list:
    """Option 23: a list of IPv6 addresses."""
    raw = raw or b""
    return [str(ipaddress.IPv6Address(raw[i : i + 16])) for i in range(0, len(raw) - 15, 16)]


def domains(raw: bytes | None) -> list:
    """Option 24: DNS names in uncompressed wire format (RFC 8415 section 10)."""
    names: list = []
    labels: list = []
    at = 0
    raw = raw or b""
    while at < len(raw):
        length = raw[at]
        if length == 0:
            if labels:
                names.append(".".join(labels))
            labels, at = [], at + 1
            continue
        if length > 63 or at + 1 + length > len(raw):
            break
        labels.append(raw[at + 1 : at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    return names
