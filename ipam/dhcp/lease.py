"""One lease: a thread that enters the container's netns and runs pyroute2's DHCP client there.

setns(2) moves only the calling thread, so each lease gets its own thread and asyncio loop,
inside the container netns for its whole life: pyroute2's raw socket and its netlink lookups
then see the container's interface. The client does DISCOVER/OFFER/REQUEST/ACK, renews at T1,
rebinds at T2 and releases (client.py adapts it: client-id and `provide` options on each message,
every ACK persisted through store.py); we stop at expiry with the link set down, and
stop when the netns or the link is gone. A thread in a netns keeps it alive, so the watch loop
checks that the netns path still names the same namespace.

Kernel work goes through one session (libcni/kernel/session.py) per lease thread: the netns is
opened and entered once, one rtnetlink socket serves the whole life of the lease, and the
interface is looked up by name once; after that it is the `Link` we hold (by index).
"""

import asyncio
import logging
import threading
import time

from pyroute2.dhcp import fsm
from pyroute2.dhcp.client import ClientConfig
from pyroute2.dhcp.leases import Lease

from ipam.dhcp import options
from ipam.dhcp.client import Client, StoredLease, backoff, jsonable, release_from_host
from ipam.dhcp.worker import AttachmentWorker
from libcni.kernel.session import Session
from libcni.protocol.errors import INTERNAL, CNIError

LOG = logging.getLogger("dhcp")
IFF_LOWER_UP = 0x10000
CARRIER_WAIT = 2.0  # seconds to wait for the link's carrier before the first DISCOVER anyway
WATCH_PERIOD = 1.0


class Settings:
    """The daemon's flags that shape every exchange."""

    def __init__(self, timeout=10.0, resend_max=62.0, resend_timeout=208.0, broadcast=False):
        self.timeout = timeout
        self.resend_max = resend_max
        self.resend_timeout = resend_timeout
        self.broadcast = broadcast


class Attachment:
    """What a lease is for: the container's interface and the options to send and ask for."""

    FIELDS = ("key", "containerID", "network", "ifname", "netns", "request", "provide", "priority")
    DEFAULT_FAMILIES = ["ipv4"]

    def __init__(self, **values) -> None:
        self.key: str = values["key"]
        self.container_id: str = values["containerID"]
        self.network: str = values["network"]
        self.ifname: str = values["ifname"]
        self.netns: str = values["netns"]
        self.request: list = list(values.get("request") or [])
        self.provide: dict = dict(values.get("provide") or {})  # str(code) -> hex
        self.priority: int = int(values.get("priority") or 0)
        self.families: list = list(values.get("families") or self.DEFAULT_FAMILIES)
        self.rapid_commit: bool = bool(values.get("rapidCommit", True))

    def record(self) -> dict:
        record = {
            "key": self.key,
            "containerID": self.container_id,
            "network": self.network,
            "ifname": self.ifname,
            "netns": self.netns,
            "request": self.request,
            "provide": self.provide,
            "priority": self.priority,
        }
        # Only when not IPv4 alone: an IPv4-only record stays byte for byte what it was.
        if self.families != self.DEFAULT_FAMILIES:
            record["families"] = self.families
            record["rapidCommit"] = self.rapid_commit
        return record


class LeaseWorker(AttachmentWorker):
    """Acquires (or resumes) one lease and keeps it until stopped, expired or orphaned."""

    def __init__(self, att: Attachment, settings: Settings, store, on_end, stored=None):
        super().__init__(f"lease {att.key}", att, settings, store, on_end)
        self.stored = stored  # a persisted lease to resume instead of a new DISCOVER
        self.lease: Lease | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.release_from_host = False
        self._lease_class = type("WorkerLease", (StoredLease,), {"worker": self})

    def has_lease(self) -> bool:
        return self.lease is not None

    def lease_result(self) -> dict:
        lease = self.lease
        assert lease is not None
        return options.result_from_ack(lease.ip, lease.ack["options"], self.att.priority)

    def held(self) -> bool:
        lease = self.lease
        return lease is not None and not lease.expired and not self.finished.is_set()

    def _wake_up(self) -> None:
        with self._lock:
            loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop already ended

    # -- called from the client, in this thread ----------------------------------------------

    def persist(self, lease: Lease) -> None:
        record = dict(
            self.att.record(),
            lease={
                "ack": jsonable(lease.ack),
                "interface": lease.interface,
                "server_mac": lease.server_mac,
                "obtained": lease.obtained,
            },
        )
        try:
            self.store.save(record)
        except OSError as err:
            LOG.error("%s: cannot persist the lease: %s", self.att.key, err)

    def bound_to(self, lease: Lease) -> None:
        if self.lease is None:
            verb = f"acquired in {(time.monotonic() - self.created_at) * 1000:.0f} ms"
        else:
            verb = "renewed"
        self.lease = lease
        LOG.info(
            "%s: lease %s %s, expires in %.0fs",
            self.att.key,
            lease.ip,
            verb,
            lease.expiration_in or 0,
        )
        self.ready.set()

    def expire(self) -> None:
        LOG.warning(
            "%s: lease %s expired; setting %s down",
            self.att.key,
            self.lease.ip if self.lease else "?",
            self.att.ifname,
        )
        try:
            if self._session is not None and self._link is not None:
                self._session.set_link(self._link, f"set {self.att.ifname} down", up=False)
        except CNIError as err:
            LOG.error("%s: cannot set %s down: %s", self.att.key, self.att.ifname, err.msg)
        self.ended = "expired"
        self.stop(release=False)

    # -- the thread ------------------------------------------------------------------------

    def serve(self, session: Session) -> None:
        asyncio.run(self._serve())

    def after_netns(self) -> None:
        if self.release_from_host:  # back in the daemon's netns here
            release_from_host(self)

    def _link_up(self) -> None:
        """Bring the interface up and wait for its carrier: a DISCOVER sent before that is
        lost, and upstream then waits ~2 s for its first resend."""
        session = self._session
        assert session is not None
        link = self._link = session.require(
            self.att.ifname,
            f'DHCP: interface "{self.att.ifname}" not found in netns {self.att.netns}',
        )
        if not link.up:
            session.set_link(link, f"set {self.att.ifname} up", up=True)
        deadline = time.monotonic() + CARRIER_WAIT
        while time.monotonic() < deadline:
            fresh = session.link_by_index(link.index)
            if fresh is None or fresh.flags & IFF_LOWER_UP:
                return
            time.sleep(0.002)

    def _config(self) -> ClientConfig:
        timeout = max(1, int(self.settings.timeout))
        return ClientConfig(
            interface=self.att.ifname,
            lease_type=self._lease_class,
            requested_parameters=self.att.request,
            timeouts={
                fsm.State.REBOOTING: timeout,
                fsm.State.REQUESTING: timeout,
                fsm.State.SELECTING: max(timeout, 60),
            },
            retransmission=lambda: backoff(self.settings.resend_max),
            release=False,
            handle_signals=False,  # not the main thread; the daemon owns the signals
            vendor_id=None,
            host_name=None,
        )

    async def _serve(self) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            if self._stop_wanted:
                return
        self._link_up()
        while True:
            client = Client(self._config(), self)
            async with client:
                if self.stored is not None or self.lease is not None:
                    await self._resume(client)
                else:
                    await client.bootstrap()
                restart = await self._watch(client)
                # Released on DEL and GC, and when the container is gone without a DEL. Our
                # thread keeps a deleted netns (and so its link) alive: the raw socket still
                # works then. The socket dies with the link: then we release from the host.
                wanted = (
                    not restart
                    and self.held()
                    and (
                        self._release_wanted
                        or self.ended in ("netns gone", "netns replaced", "link gone")
                    )
                )
                self.release_from_host = wanted and self._gone() == "link gone"
                client.config.release = wanted and not self.release_from_host
            if not restart:
                return
            self.stored = None
            LOG.info(
                "%s: the DHCP socket on %s died (link down?); reopening it",
                self.att.key,
                self.att.ifname,
            )

    async def _resume(self, client: Client) -> None:
        """A lease we held (the previous daemon's, or ours before the socket died): renew it
        with a unicast REQUEST, no new DISCOVER."""
        lease = self.lease or self._lease_class(**self.stored)
        if lease.expired:
            self.lease = lease
            self.expire()
            return
        for state in (fsm.State.SELECTING, fsm.State.REQUESTING, fsm.State.BOUND):
            client.state = state  # the only legal path from INIT to BOUND
        client.lease = lease  # arms the T1, T2 and expiry timers
        self.lease = lease
        self.ready.set()
        LOG.info("%s: resumed lease %s, renewing", self.att.key, lease.ip)
        await client._renew()

    def _link_is_up(self) -> bool:
        try:
            link = self._current_link()
        except OSError:
            return False
        return link is not None and link.up

    async def _watch(self, client: Client) -> bool:
        """Until stopped or orphaned; True when the client's socket died and must be reopened."""
        started = time.monotonic()
        assert self._stop_event is not None
        while not self._stop_wanted:
            try:
                await asyncio.wait_for(self._stop_event.wait(), WATCH_PERIOD)
            except TimeoutError:
                pass
            if self._stop_wanted:
                return False
            self.ended = self._gone()
            if self.ended:
                LOG.info("%s: %s, stopping", self.att.key, self.ended)
                return False
            tasks = (client._receiver_task, client._sender_task)
            if any(task is not None and task.done() for task in tasks) and self._link_is_up():
                return True  # reopen once the link is back up
            waited = time.monotonic() - started
            if not self.ready.is_set() and waited > self.settings.resend_timeout:
                self.error = CNIError(
                    INTERNAL,
                    f"no DHCP lease for {self.att.key} on {self.att.ifname} after "
                    f"{self.settings.resend_timeout:.0f}s: no answer from a DHCP server",
                )
                return False
        return False
