"""What the IPv4 and IPv6 lease workers (lease.py, lease6.py) share: one thread per lease and
family, driven alike by the daemon (wait for the lease, stop with or without release, tell
whether it is held and for which netns), and the watch for a netns or link that went away.

A subclass names its protocol (`PROTOCOL`, for messages), says whether its lease is held
(`has_lease`), builds the CNI result (`lease_result`) and wakes its own loop on stop (`_wake_up`).
"""

import logging
import os
import threading
import time

from libcni.kernel.rtnl import Link
from libcni.kernel.session import Session
from libcni.protocol.errors import INTERNAL, CNIError

LOG = logging.getLogger("dhcp")


class AttachmentWorker(threading.Thread):
    """One lease of one attachment; `on_end(worker)` runs in the worker's thread when it is
    done, whatever the reason."""

    PROTOCOL = "DHCP"

    def __init__(self, thread_name: str, att, settings, store, on_end) -> None:
        super().__init__(name=thread_name, daemon=True)
        self.att = att
        self.settings = settings
        self.store = store
        self.on_end = on_end
        self.error: CNIError | None = None
        self.ready = threading.Event()  # bound, or failed (then self.error)
        self.finished = threading.Event()
        self.ended = ""  # why it stopped
        self._stop_wanted = self._release_wanted = False
        self._netns_id: tuple | None = None  # (st_dev, st_ino) of the netns it serves
        self._session: Session | None = None  # this thread's, while it runs
        self._link: Link | None = None  # the interface, looked up once
        self.created_at = time.monotonic()

    # -- called from the daemon's threads --------------------------------------------------

    def wait(self, timeout: float) -> dict:
        if not self.ready.wait(timeout):
            raise CNIError(
                INTERNAL, f"{self.att.key}: no {self.PROTOCOL} lease after {timeout:.0f}s"
            )
        if self.error is not None:
            raise self.error
        return self.result()

    def result(self) -> dict:
        if not self.has_lease():
            raise CNIError(INTERNAL, f"{self.att.key}: no {self.PROTOCOL} lease held")
        return self.lease_result()

    def serves(self, netns_path: str) -> bool:
        """Whether this lease is for the netns now at `netns_path` (a container restarted with
        the same ID gets a new netns: its lease starts over)."""
        try:
            st = os.stat(netns_path)
        except OSError:
            return False
        return self.att.netns == netns_path and self._netns_id in (None, (st.st_dev, st.st_ino))

    def stop(self, release: bool, wait: float = 5.0) -> None:
        self._release_wanted = self._release_wanted or release
        self._stop_wanted = True
        self._wake_up()
        if threading.current_thread() is not self:
            self.finished.wait(wait)

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        """One kernel session on the container's netns, entered for the lease's whole life."""
        try:
            with Session(self.att.netns) as session, session.inside():
                st = os.stat(self.att.netns)
                self._netns_id = (st.st_dev, st.st_ino)
                self._session = session
                try:
                    self.serve(session)
                finally:
                    self._session = None
            self.after_netns()
        except CNIError as err:
            self.error = err
        except Exception as err:  # never let one lease take the daemon down
            LOG.exception("%s: %s lease worker failed", self.att.key, self.PROTOCOL)
            self.error = CNIError(INTERNAL, f"{self.att.key}: {self.PROTOCOL}: {err}")
        finally:
            if self.error is not None:
                self.ended = self.ended or f"failed: {self.error.msg}"
            self.finished.set()
            self.ready.set()
            self.on_end(self)

    # -- for the subclass ------------------------------------------------------------------

    def serve(self, session: Session) -> None:
        """Acquire or resume the lease and keep it, inside the netns, until told to stop."""
        raise NotImplementedError

    def after_netns(self) -> None:
        """What is left to do back in the daemon's own netns."""

    def has_lease(self) -> bool:
        raise NotImplementedError

    def lease_result(self) -> dict:
        raise NotImplementedError

    def _wake_up(self) -> None:
        """Make the thread see the stop flags now."""

    def _current_link(self) -> Link | None:
        """Our interface as the kernel has it now (by index), None when it is gone."""
        if self._session is None or self._link is None:
            return None
        return self._session.link_by_index(self._link.index)

    def _gone(self) -> str:
        """Why this lease has nothing left to serve ("" while it has): a thread in a netns keeps
        it alive, so the netns path must still name the same namespace."""
        try:
            st = os.stat(self.att.netns)
        except OSError:
            return "netns gone"
        if (st.st_dev, st.st_ino) != self._netns_id:
            return "netns replaced"
        try:
            if self._link is not None and self._current_link() is None:
                return "link gone"
        except OSError:
            pass  # a transient netlink failure: look again next time
        return ""
