"""One DHCPv6 lease (stateful IA_NA, RFC 8415): a thread inside the container's netns.

Like the IPv4 worker (lease.py) it opens one kernel session on the netns, enters it for its whole
life and looks the interface up once. It waits for the interface's link-local address to finish
DAD (the client's source address), then Solicit -> Advertise -> Request -> Reply, or Solicit ->
Reply when it asks for Rapid Commit and the server agrees. It renews at T1 (Renew, to the server
that bound the address), rebinds at T2 (Rebind, to any server), removes the address from the
interface when the valid lifetime ends, and sends Release when stopped for DEL or GC. A stored
lease (daemon restart) is taken up with a Request for the same address from the same server:
no Solicit, so the server keeps the binding and the pod its address.

Every message carries the attachment's DUID-UUID and IAID (dhcp6packet.py): stable across
restarts, so a server that remembers the binding hands the same address back.
"""

import logging
import random
import select
import socket
import threading
import time

from ipam.dhcp import dhcp6packet as p6
from ipam.dhcp.worker import AttachmentWorker
from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session
from libcni.protocol.errors import INTERNAL, CNIError

LOG = logging.getLogger("dhcp")
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
LINK_LOCAL_WAIT = 10.0  # seconds for the link-local address to pass DAD (1 s per probe)
TICK = 0.5  # how often a waiting worker looks at its stop flag, netns and link
SO_BINDTODEVICE = 25
WANTED = (p6.DNS_SERVERS, p6.DOMAIN_LIST)


class Lease6Worker(AttachmentWorker):
    """Acquires (or resumes) one IPv6 lease and keeps it until stopped, expired or orphaned.
    The same surface as lease.LeaseWorker (worker.AttachmentWorker), so the daemon drives both
    alike."""

    family = "ipv6"
    PROTOCOL = "DHCPv6"

    def __init__(self, att, settings, store, on_end, stored=None):
        super().__init__(f"lease6 {att.key}", att, settings, store, on_end)
        self.binding: dict | None = dict(stored) if stored else None
        self._wake = threading.Event()  # set by stop(): a bound lease's wait ends at once
        self._releasing = False  # the Release exchange runs on after the stop
        self._sock: socket.socket | None = None
        self.duid = p6.duid_uuid(att.key)
        self.iaid = p6.iaid_of(att.key)

    def has_lease(self) -> bool:
        return self.binding is not None

    def lease_result(self) -> dict:
        binding = self.binding
        assert binding is not None
        dns: dict = {}
        if binding.get("dns"):
            dns["nameservers"] = list(binding["dns"])
        if binding.get("search"):
            dns["search"] = list(binding["search"])
        # /128: DHCPv6 assigns an address, not a prefix; which prefix is on-link (and the
        # default router) is what the network's Router Advertisements say, and the kernel
        # learns those in the pod's netns itself.
        return {"ips": [{"address": f"{binding['address']}/128"}], "routes": [], "dns": dns}

    def held(self) -> bool:
        binding = self.binding
        return (
            binding is not None
            and time.time() < binding["obtained"] + binding["valid"]
            and not self.finished.is_set()
        )

    def _wake_up(self) -> None:
        self._wake.set()

    # -- the thread --------------------------------------------------------------------------------

    def serve(self, session: Session) -> None:
        try:
            self._serve(session)
        finally:
            if self._sock is not None:
                self._sock.close()

    def _serve(self, session: Session) -> None:
        ifname = self.att.ifname
        link = self._link = session.require(
            ifname, f'DHCPv6: interface "{ifname}" not found in netns {self.att.netns}'
        )
        if not link.up:
            session.set_link(link, f"set {ifname} up", up=True)
        self._sock = self._open_socket(link, self._link_local(session, link))
        if self.binding is not None:
            self._resume()
        else:
            self._acquire()
        if self.binding is None or self.ended == "expired":
            return
        self.ready.set()
        self._maintain()
        wanted = self._release_wanted or self.ended in ("netns gone", "netns replaced")
        if wanted and self.held() and self.ended != "link gone":
            self._release()

    def _link_local(self, session: Session, link: Link) -> str:
        """The interface's link-local address once DAD passed: the only legal source of a
        client's messages, and where the server answers."""
        deadline = time.monotonic() + LINK_LOCAL_WAIT
        while True:
            state = "none"
            for address, _, flags in session.address_flags(link, socket.AF_INET6):
                if not address.lower().startswith("fe80:"):
                    continue
                if flags & IFA_F_DADFAILED:
                    raise CNIError(
                        INTERNAL,
                        f"DHCPv6: the link-local address {address} of {link.name} failed "
                        "duplicate address detection",
                        "another interface on the link has the same MAC address",
                    )
                if not flags & IFA_F_TENTATIVE:
                    return address
                state = "tentative"
            if time.monotonic() > deadline or self._stop_wanted:
                raise CNIError(
                    INTERNAL,
                    f"DHCPv6: no usable link-local address on {link.name} in netns "
                    f"{self.att.netns} after {LINK_LOCAL_WAIT:.0f}s (link-local: {state})",
                    "is IPv6 disabled on the interface (net.ipv6.conf.*.disable_ipv6) or "
                    "is the link down?",
                )
            time.sleep(0.05)

    def _open_socket(self, link: Link, link_local: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, link.name.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
            sock.bind((link_local, p6.CLIENT_PORT, 0, link.index))
        except OSError as err:
            sock.close()
            raise CNIError(INTERNAL, f"DHCPv6: cannot open the client socket: {err}") from None
        return sock

    # -- exchanges ---------------------------------------------------------------------------------

    def _message(self, kind: int, started: float, server_id: bytes | None, addresses=()):
        options = [(p6.CLIENT_ID, self.duid)]
        if server_id is not None:
            options.append((p6.SERVER_ID, server_id))
        options.append(p6.ia_na(self.iaid, addresses))
        options.append(p6.elapsed(int((time.monotonic() - started) * 100)))
        if kind != p6.RELEASE:
            options.append(p6.oro(*WANTED))
        if kind == p6.SOLICIT and self.att.rapid_commit:
            options.append((p6.RAPID_COMMIT, b""))
        return p6.Message(kind, random.getrandbits(24), options)

    def _exchange(self, kind, server_id, addresses, answers, until, first=1.0, most=None):
        """Send a `kind` message, resending with RFC 8415's doubling timeout (from `first` up
        to `most` seconds, ±10 %), until an answer of a type in `answers` comes or the monotonic
        time `until` passes. None then (or when stopped)."""
        most = most or self.settings.resend_max
        started = time.monotonic()
        delay = first * random.uniform(0.9, 1.1)
        msg = self._message(kind, started, server_id, addresses)
        while True:
            try:
                assert self._sock is not None
                self._sock.sendto(msg.encode(), (p6.ALL_SERVERS, p6.SERVER_PORT))
            except OSError as err:
                LOG.warning("%s: sending %s: %s", self.att.key, p6.NAMES[kind], err)
            resend = min(time.monotonic() + delay, until)
            answer = self._receive(msg.xid, answers, resend)
            stopped = self._stop_wanted and not self._releasing
            if answer is not None or stopped or time.monotonic() >= until:
                return answer
            delay = min(delay * 2, most) * random.uniform(0.9, 1.1)
            msg.options = [o for o in msg.options if o[0] != p6.ELAPSED_TIME]
            msg.options.insert(-1, p6.elapsed(int((time.monotonic() - started) * 100)))

    def _receive(self, xid: int, answers: tuple, until: float):
        sock = self._sock
        assert sock is not None
        while self._releasing or not self._stop_wanted:
            left = until - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([sock], [], [], min(left, TICK))
            if not readable:
                if self._gone():
                    return None
                continue
            try:
                data = sock.recv(65536)
                reply = p6.Message.decode(data)
            except (OSError, ValueError):
                continue
            if (
                reply.xid == xid
                and reply.kind in answers
                and reply.option(p6.CLIENT_ID) == self.duid
            ):
                return reply
        return None

    def _no_answer(self, what: str) -> CNIError:
        return CNIError(
            INTERNAL,
            f"no DHCPv6 lease for {self.att.key} on {self.att.ifname}: no server answered "
            f"the {what} within {self.settings.resend_timeout:.0f}s",
            "is a DHCPv6 server (stateful, IA_NA) on the link? (the daemon's -resendtimeout)",
        )

    def _declined(self, reply: p6.Message, what: str) -> CNIError:
        code, text = reply.status()
        ia = reply.ia_na()
        if code == p6.SUCCESS and ia is not None:
            code, text = ia.status
        name = p6.STATUS_NAMES.get(code, str(code))
        return CNIError(
            INTERNAL,
            f"DHCPv6 server declined the {what} for {self.att.key}: {name}"
            + (f" ({text})" if text else ""),
        )

    def _acquire(self) -> None:
        until = time.monotonic() + self.settings.resend_timeout
        while not self._stop_wanted:
            answer = self._exchange(p6.SOLICIT, None, (), (p6.ADVERTISE, p6.REPLY), until)
            if answer is None:
                if not self._stop_wanted:
                    raise self._no_answer("Solicit")
                return
            if answer.kind == p6.REPLY:  # Rapid Commit: bound in two messages
                if self._bind(answer):
                    return
                raise self._declined(answer, "Solicit (Rapid Commit)")
            ia = answer.ia_na()
            if answer.status()[0] != p6.SUCCESS or ia is None or not ia.addresses:
                raise self._declined(answer, "Solicit")
            server_id = answer.option(p6.SERVER_ID)
            reply = self._exchange(
                p6.REQUEST, server_id, [ia.addresses[0][0]], (p6.REPLY,), until, most=30.0
            )
            if reply is None:
                continue  # RFC 8415 18.2.2: no Reply to the Request, start over
            if self._bind(reply):
                return
            raise self._declined(reply, "Request")

    def _resume(self) -> None:
        """The previous daemon's lease: a Request for the same address from the same server;
        while no server answers we keep the lease until its valid lifetime ends."""
        binding = self.binding
        assert binding is not None
        if time.time() >= binding["obtained"] + binding["valid"]:
            self._expire()
            return
        server_id = bytes.fromhex(binding["server_id"])
        until = time.monotonic() + self.settings.timeout
        reply = self._exchange(p6.REQUEST, server_id, [binding["address"]], (p6.REPLY,), until)
        if reply is not None and not self._bind(reply):
            LOG.warning("%s: server refused the stored lease %s", self.att.key, binding["address"])
        LOG.info("%s: resumed DHCPv6 lease %s", self.att.key, binding["address"])

    def _bind(self, reply: p6.Message) -> bool:
        """Take the lease a Reply gives; False when it gives none."""
        ia = reply.ia_na()
        if reply.status()[0] != p6.SUCCESS or ia is None or ia.status[0] != p6.SUCCESS:
            return False
        if not ia.addresses:
            return False
        address, preferred, valid = ia.addresses[0]
        if self.binding is not None and self.binding["address"] != address:
            LOG.warning(
                "%s: server moved us from %s to %s", self.att.key, self.binding["address"], address
            )
        t1 = ia.t1 or preferred // 2
        t2 = ia.t2 or preferred * 4 // 5
        verb = (
            "renewed"
            if self.binding
            else f"acquired in {(time.monotonic() - self.created_at) * 1000:.0f} ms"
        )
        self.binding = {
            "address": address,
            "preferred": preferred,
            "valid": valid,
            "t1": t1,
            "t2": max(t2, t1),
            "server_id": (reply.option(p6.SERVER_ID) or b"").hex(),
            "obtained": time.time(),
            "dns": p6.addresses(reply.option(p6.DNS_SERVERS)),
            "search": p6.domains(reply.option(p6.DOMAIN_LIST)),
        }
        LOG.info(
            "%s: DHCPv6 lease %s %s, T1 %ds, valid %ds", self.att.key, address, verb, t1, valid
        )
        self.persist()
        return True

    def persist(self) -> None:
        try:
            self.store.save(dict(self.att.record(), lease6=self.binding))
        except OSError as err:
            LOG.error("%s: cannot persist the DHCPv6 lease: %s", self.att.key, err)

    def _maintain(self) -> None:
        """Renew at T1, rebind at T2, expire at the end of the valid lifetime; stop when asked
        or when the netns or the interface is gone."""
        while not self._stop_wanted:
            binding = self.binding
            assert binding is not None
            now = time.time()
            t1, t2 = binding["obtained"] + binding["t1"], binding["obtained"] + binding["t2"]
            end = binding["obtained"] + binding["valid"]
            if now >= end:
                self._expire()
                return
            if now >= t1:
                rebind = now >= t2
                kind = p6.REBIND if rebind else p6.RENEW
                server_id = None if rebind else bytes.fromhex(binding["server_id"])
                until = time.monotonic() + ((end if rebind else t2) - now)
                reply = self._exchange(
                    kind, server_id, [binding["address"]], (p6.REPLY,), until, 10.0, 600.0
                )
                if reply is not None and not self._bind(reply):
                    LOG.warning("%s: %s refused: %s", self.att.key, p6.NAMES[kind], reply.status())
                    self._wake.wait(min(TICK, max(0.0, end - time.time())))
            else:
                self._wake.wait(min(TICK, t1 - now))
            self.ended = self._gone()
            if self.ended:
                LOG.info("%s: %s, stopping DHCPv6", self.att.key, self.ended)
                return

    def _expire(self) -> None:
        binding = self.binding
        address = binding["address"] if binding else "?"
        LOG.warning(
            "%s: DHCPv6 lease %s expired; removing it from %s",
            self.att.key,
            address,
            self.att.ifname,
        )
        try:
            if self._session is not None and self._link is not None and binding:
                self._session.delete_address(self._link, address, 128)
        except OSError as err:
            LOG.info("%s: removing %s: %s", self.att.key, address, err)
        self.ended = "expired"

    def _release(self) -> None:
        binding = self.binding
        assert binding is not None
        server_id = bytes.fromhex(binding["server_id"])
        until = time.monotonic() + 2.0
        self._releasing = True
        try:
            self._exchange(p6.RELEASE, server_id, [binding["address"]], (p6.REPLY,), until)
        finally:
            self._releasing = False
        LOG.info("%s: released DHCPv6 lease %s", self.att.key, binding["address"])
