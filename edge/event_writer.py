"""The daemon's writes to its event store, on the owner thread: opening it (and again while
it cannot be), an event appended with what it owes in one transaction, the events it
refused held in memory and written again later, a file found damaged while running set
aside and started afresh, and the retention purge."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Container
from typing import Callable

from edge import routing
from edge.clock import Clock, ClockSteps
from edge.config import Config
from edge.errors import StorageError
from edge.events import Event
from edge.owner import OwnerLoop
from edge.storage_health import WRITE_FAILURES, StorageHealth
from edge.store import Checkpointer, Store, is_corruption, is_full
from edge.unstored import UnstoredEvents

log = logging.getLogger(__name__)

STORAGE_RETRY_S = 10.0
PURGE_EVERY_S = 3600.0


class EventWriter:
    """``store`` is None while it cannot be opened. ``notify(event)`` tells the workers of
    an event written later than it was recorded; ``sent_from_memory(event_id)`` names the
    contacts that got its SMS meanwhile (the store owes them nothing)."""

    def __init__(self, cfg: Config, loop: OwnerLoop, clock: Clock, clock_steps: ClockSteps,
                 health: StorageHealth, *, notify: Callable[[Event], None],
                 sent_from_memory: Callable[[str], Container[str]]):
        self.cfg = cfg
        self.loop = loop
        self.clock = clock
        self.clock_steps = clock_steps
        self.health = health
        self._notify = notify
        self._sent_from_memory = sent_from_memory
        self.store: Store | None = None
        self._checkpointer: Checkpointer | None = None
        # Acted on, not yet written (storage failing).
        self.unstored = UnstoredEvents(loop.post, self.retry)
        self._retry_armed = False
        self._next_purge = 0.0

    def open(self) -> bool:
        """Open the store (at start, and again while it is unusable); False if it still
        cannot be opened."""
        try:
            self.store = Store(self.cfg.storage.db_path, check_integrity=True,
                               autocheckpoint=False, on_corrupt=self.corrupt_seen)
        except StorageError as e:
            if not self.health.failing("store"):
                log.error("event store unusable, alarms go on from memory: %s", e)
                self.health.trouble("store", "unwritable", str(e))
            return False
        try:  # what a cloned card is told apart by (edge.cli)
            self.store.claim_device(self.cfg.site.device_id)
        except StorageError as e:
            log.warning("the store does not record its device: %s", e)
        if self._checkpointer is None:  # (opened again after a damaged file: it goes on)
            self._checkpointer = Checkpointer(self.cfg.storage.db_path)
            self._checkpointer.start()
        if self.store.report.quarantined is not None:
            self.health.trouble("store", "corrupt", str(self.store.report.quarantined))
        return True

    def corrupt_seen(self, inode: int, detail: str) -> None:
        """Any thread: a read or write found the store's file damaged; the owner deals with
        it on the loop's next turn (never inside the store call that found it)."""
        self.loop.post(self.corrupt_found, inode, detail)

    def corrupt_found(self, inode: int, detail: str) -> None:
        """The store's file (``inode``) went corrupt while running. It takes no more
        events: the `storage` fault (`corrupt`) is raised now and held in memory with what
        follows; the file is moved aside and a fresh store started the way the first open
        does with a corrupt file, which then takes the held events in order. Done here, not
        at a restart: a restart would lose the events held in memory, the latched alarms
        and the siren (restored from a store that no longer has them), and the record of
        the SMS already sent from memory. A report about a file already moved aside (a
        worker's connection to it) is no news."""
        if self.store is None or inode != self.store.inode:
            return
        store, self.store = self.store, None  # held in memory from here
        log.error("event store damaged while running, alarms go on from memory: %s", detail)
        self.health.trouble("store", "corrupt", detail)
        try:
            moved = store.recover_from_corruption()
        except StorageError as e:
            # Opened again by retry(), as at start: the damaged file is moved aside then.
            log.error("the damaged store is not set aside yet: %s", e)
        else:
            self.store = store  # on a fresh file now
            self.health.trouble("store", "corrupt", str(moved))
            # The fault itself is held: its retry is armed, and ends the fault once it
            # finds the fresh store working (not now: `status` shows it for a while).
            self.unstored.flush(self._store_held)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self.store is not None:
            self.store.close()

    def write(self, kind: str, subject: str, when: dt.datetime, data: dict,
              event_id: str) -> Event:
        """The event as stored, or (seq 0) as held in memory when the store refused it."""
        event = None
        # Behind the events still in memory, never before them: the platform's `sequence`
        # follows creation order.
        if self.unstored.flush(self._store_held):
            event = self._append(kind, subject, when, data, event_id)
        if event is None:
            event = Event(seq=0, id=event_id, kind=kind, subject=subject, time=when, data=data)
            self._keep_unstored(event)
        else:
            self.health.writes_work(*WRITE_FAILURES)
        if event.seq == 0 and not self._retry_armed:
            self._retry_armed = True
            self.loop.after(STORAGE_RETRY_S, self.retry)
        return event

    def _append(self, kind, subject, when, data, event_id, *,
                sms_sent: Container[str] = frozenset()) -> Event | None:
        """``sms_sent``: contacts that already got this event's SMS from memory while it
        could not be stored; the store owes them nothing."""
        if self.store is None:
            return None
        try:
            return self._append_to(self.store, kind, subject, when, data, event_id, sms_sent)
        except StorageError as e:
            log.error("cannot store %s event: %s", kind, e)
            if is_corruption(e.__cause__):
                return None  # corrupt_found, next: the fault, and a fresh store
            if not self.health.failing("store"):
                reason = "full" if is_full(e.__cause__) else "unwritable"
                self.loop.post(self.health.trouble, "store", reason, str(e))
            return None

    def _append_to(self, store: Store, kind, subject, when, data, event_id,
                   sms_sent: Container[str]) -> Event:
        """The event and its SMS deadlines stored. Deadlines set before a clock step move
        first; this event's are set after it, and no step is moved before they are stored.
        (Nothing in here may record an event: that would wait for itself.)"""
        with self.clock_steps.deadlines(store):
            sms = [r for r in routing.sms_requests(self.cfg, kind, when.timestamp(), data)
                   if r.contact not in sms_sent]
            return store.append(kind, subject, when, data, transports=self.cfg.transports,
                                sms=sms, event_id=event_id)

    def _keep_unstored(self, event: Event) -> None:
        """Hold an event the store refused (UnstoredEvents says what goes when full)."""
        if self.unstored.make_room() is not None:
            self.health.trouble("store", "events_dropped", f"{self.unstored.dropped} "
                                "events dropped while the store failed")
        self.unstored.hold(event)

    def _store_held(self, pending: Event) -> Event | None:
        sent = self._sent_from_memory(pending.id)
        stored = self._append(pending.kind, pending.subject, pending.time, pending.data,
                              pending.id, sms_sent=sent)
        if stored is not None:
            self._notify(stored)
        return stored

    def retry(self) -> None:
        """Open the store if it is not, write the held events; again later while any is
        left."""
        self._retry_armed = False
        if ((self.store is not None or self.open())
                and self.unstored.flush(self._store_held)):
            # a corrupt file is kept aside
            self.health.writes_work(*WRITE_FAILURES, "corrupt")
        if self.unstored and not self._retry_armed:
            self._retry_armed = True
            self.loop.after(STORAGE_RETRY_S, self.retry)

    def purge_if_due(self, clock_synced: bool) -> None:
        """The retention purge, once every PURGE_EVERY_S."""
        now = self.clock.monotonic()
        if self.store is None or now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        # A clock not set (a Pi booting in 1970, or years ahead) dates nothing: only
        # delivered heartbeats go, whatever their age, until it is.
        cutoff = (self.clock.now().timestamp() - self.cfg.storage.retention_days * 86400
                  if clock_synced else None)
        try:
            gone = self.store.purge(cutoff)
        except StorageError as e:
            log.warning("retention purge failed: %s", e)
        else:
            if gone:
                log.info("retention: purged %d events", gone)
