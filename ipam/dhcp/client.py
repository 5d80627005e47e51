"""pyroute2's DHCP client, adapted to a container interface: the client-id and the config's
`provide` options on every message, the broadcast flag as the daemon's flag says, every ACK
persisted through the lease worker, and expiry handed to the worker (pyroute2 would start over
with a DISCOVER; we stop and set the link down, as upstream). Also the host-side DHCPRELEASE for
a lease whose interface is already gone.
"""

import logging
import random
import time

from pyroute2.dhcp import CodeMapping, fsm, messages
from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.dhcp4msg import dhcp4msg
from pyroute2.dhcp.enums import bootp, dhcp
from pyroute2.dhcp.leases import Lease

from ipam.dhcp import options

LOG = logging.getLogger("dhcp")


def backoff(resend_max: float):
    """Upstream's resend schedule: 4 quick retries at 2 s, then 4 s doubling up to the
    maximum, each with ±1 s of jitter."""
    for _ in range(4):
        yield 2.0 + random.uniform(-1, 1)
    delay = 4.0
    while True:
        yield max(1.0, delay + random.uniform(-1, 1))
        delay = min(delay * 2, resend_max)


def jsonable(value):
    """A decoded DHCP message as plain JSON values (enums as numbers, bytes as byte lists)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return int(value)
    return str(value)


class Message(dhcp4msg):
    """A dhcp4msg that also encodes `option<N>` entries as raw bytes (the config's `provide`)."""

    def _register_options(self) -> None:
        super()._register_options()
        for code in range(1, 255):
            name = f"option{code}"
            self._encode_map[name] = CodeMapping(name=name, code=code, format="array8")


class StoredLease(Lease):
    worker = None  # the LeaseWorker, set on its subclass

    def dump(self) -> None:
        self.worker.persist(self)  # type: ignore[attr-defined]

    @classmethod
    def load(cls, interface: str) -> None:
        return None  # the worker resumes a stored lease itself (see LeaseWorker._resume)


class Client(AsyncDHCPClient):
    def __init__(self, config: ClientConfig, worker) -> None:
        super().__init__(config)
        self.worker = worker

    async def _send_message(self, msg) -> None:
        att = self.worker.att
        msg.dhcp["secs"] = min(int(time.time() - self.last_state_change), 0xFFFF)
        msg.dhcp["xid"] = self.xid.for_state(self.state)
        wire = Message(dict(msg.dhcp))
        wire["options"] = dict(msg.dhcp["options"])
        if str(options.CLIENT_ID) not in att.provide:
            wire["options"]["client_id"] = {"type": 0, "key": att.key.encode()}
        if msg.message_type != dhcp.MessageType.RELEASE:
            for code, value in att.provide.items():
                wire["options"][f"option{code}"] = list(bytes.fromhex(value))
        if not self.worker.settings.broadcast and wire["flags"] == bootp.Flag.BROADCAST:
            wire["flags"] = 0
        msg.dhcp = wire
        await self._sock.put(msg)

    async def ack_received(self, msg) -> None:
        await super().ack_received(msg)
        if self.state is fsm.State.BOUND and self.lease is not None:
            self.worker.bound_to(self.lease)

    async def _expire_lease(self) -> None:
        self.lease_timers.cancel()
        self.worker.expire()


def release_from_host(worker) -> None:
    """DHCPRELEASE over UDP from the daemon's own netns, for a lease whose interface is gone
    (bridge deletes the veth before its IPAM DEL, as upstream). It reaches the server when the
    host can route to it; the server matches the lease by client-id and ciaddr."""
    import socket

    lease = worker.lease
    if lease is None:
        return
    try:
        msg = messages.release(lease=lease)
        wire = Message(dict(msg.dhcp))
        wire["options"] = dict(msg.dhcp["options"])
        wire["options"]["client_id"] = {"type": 0, "key": worker.att.key.encode()}
        wire["xid"] = random.getrandbits(32)
        wire["chaddr"] = lease.ack.get("chaddr") or "00:00:00:00:00:00"
        data = wire.encode().buf
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", 68))
            except OSError:
                pass  # a host DHCP client holds port 68: the server does not care
            sock.sendto(data, (lease.server_id, 67))
        LOG.info("%s: released %s from the host (its interface is gone)", worker.att.key, lease.ip)
    except Exception as err:  # best effort: DEL never fails on it
        LOG.warning("%s: cannot release %s from the host: %s", worker.att.key, lease.ip, err)
