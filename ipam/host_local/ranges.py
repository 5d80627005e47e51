"""Address ranges and range sets as host-local understands them, and the round-robin walk.

A range set is a list of disjoint subnets of one family; host-local takes one address per set.
Validation and error texts follow upstream's allocator so configs are accepted and refused alike.
"""

import ipaddress

from libcni.protocol.errors import INVALID_NETWORK_CONFIG, CNIError


def _bad(msg: str) -> CNIError:
    return CNIError(INVALID_NETWORK_CONFIG, msg)


def _parse_ip(text, what: str):
    if not isinstance(text, str):
        raise _bad(f"invalid {what}: expected a string, got {text!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _bad(f'invalid {what} "{text}": not an IP address') from None


class Range:
    """One subnet with its allocation bounds (inclusive) and gateway."""

    def __init__(self, subnet, start, end, gateway):
        self.subnet = subnet
        self.start = start
        self.end = end
        self.gateway = gateway

    @classmethod
    def parse(cls, obj) -> "Range":
        if not isinstance(obj, dict):
            raise _bad(f"invalid range: expected an object, got {obj!r}")
        text = obj.get("subnet")
        if not text:
            raise _bad("a range needs a subnet")
        try:
            iface = ipaddress.ip_interface(text)
        except ValueError:
            raise _bad(f"invalid CIDR address: {text}") from None
        subnet = iface.network
        if iface.ip != subnet.network_address:
            raise _bad(
                f"Network has host bits set. For a subnet mask of length {subnet.prefixlen} "
                f"the network address is {subnet.network_address}"
            )
        if subnet.max_prefixlen - subnet.prefixlen < 2:
            raise _bad(f"Network {subnet} too small to allocate from")
        first = subnet.network_address + 1
        last = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
        start = _parse_ip(obj["rangeStart"], "rangeStart") if obj.get("rangeStart") else first
        end = _parse_ip(obj["rangeEnd"], "rangeEnd") if obj.get("rangeEnd") else last
        gateway = _parse_ip(obj["gateway"], "gateway") if obj.get("gateway") else first
        for name, value in (("RangeStart", start), ("RangeEnd", end)):
            if value.version != subnet.version or value not in subnet:
                raise _bad(f"{name} {value} not in network {subnet}")
        if int(start) > int(end):
            raise _bad(f"RangeStart {start} not before RangeEnd {end}")
        return cls(subnet, start, end, gateway)

    def contains(self, ip) -> bool:
        return ip.version == self.start.version and self.start <= ip <= self.end

    def size(self) -> int:
        """How many addresses can be handed out (the gateway never is)."""
        count = int(self.end) - int(self.start) + 1
        return count - (1 if self.contains(self.gateway) else 0)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


class RangeSet:
    def __init__(self, ranges: list):
        self.ranges = ranges

    @classmethod
    def parse(cls, objs) -> "RangeSet":
        if not isinstance(objs, list):
            raise _bad(f"invalid range set: expected a list, got {objs!r}")
        if not objs:
            raise _bad("empty range set")
        ranges = [Range.parse(obj) for obj in objs]
        if len({r.subnet.version for r in ranges}) > 1:
            raise _bad("mixed address families")
        for i, first in enumerate(ranges):
            for second in ranges[i + 1 :]:
                if first.subnet.overlaps(second.subnet):
                    raise _bad(f"subnets {first.subnet} and {second.subnet} overlap")
        return cls(ranges)

    @property
    def version(self) -> int:
        return self.ranges[0].subnet.version

    def range_for(self, ip):
        return next((r for r in self.ranges if r.contains(ip)), None)

    def overlaps(self, other: "RangeSet") -> bool:
        return any(a.subnet.overlaps(b.subnet) for a in self.ranges for b in other.ranges)

    def size(self) -> int:
        return sum(r.size() for r in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)

    def walk(self, last_reserved):
        """Candidate (address, range) pairs in round-robin order, one full lap at most.

        Starts right after `last_reserved` when it lies in this set (so allocations spread over
        the pool), else at the first range's start; skips gateways.
        """
        index, current = 0, None
        if last_reserved is not None:
            for i, candidate in enumerate(self.ranges):
                if candidate.contains(last_reserved):
                    index, current = i, last_reserved
                    break
        first_seen = None
        while True:
            current_range = self.ranges[index]
            if current is None:
                current = current_range.start
            elif current == current_range.end:
                index = (index + 1) % len(self.ranges)
                current_range = self.ranges[index]
                current = current_range.start
            else:
                current = current + 1
            if first_seen is None:
                first_seen = current
            elif current == first_seen:
                return
            if current != current_range.gateway:
                yield current, current_range
