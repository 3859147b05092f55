"""The shape every slow part (uplink, modem, camera) shares: a thread of its own that
sleeps until woken or until its next due time, does one step of I/O, and repeats, with
its own connection to the event store. The owner thread only ever calls notify(), which
never blocks."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from edge.errors import StorageError
from edge.events import Event
from edge.store import CorruptionSeen, Delivery, Store

if TYPE_CHECKING:
    from edge.port import ClockStepWatch

log = logging.getLogger(__name__)

IDLE_WAIT_S = 5.0


class Owed(NamedTuple):
    """What a transport's worker owes: its ``store``, the ``rows`` in seq order, and
    ``now``, the wall time (unix seconds) their retry times agree with."""

    store: Store
    rows: list[Delivery]
    now: float


class ThreadWorker:
    part = "worker"

    def __init__(self, db_path: Path, on_corrupt: CorruptionSeen):
        """``on_corrupt``: told when this worker's reads or writes find the store's file
        damaged (WorkerPort.store_corrupt: the owner sets it aside)."""
        self._db_path = db_path
        self._on_corrupt = on_corrupt
        self._store: Store | None = None
        self._wake = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.part, daemon=True)
        self._thread.start()

    def notify(self, event: Event) -> None:
        """A new event (from the owner thread): look at the store again, now."""
        self.wake()

    def wake(self) -> None:
        with self._wake:
            self._woken = True
            self._wake.notify()

    def stop(self, timeout: float) -> None:
        with self._wake:
            self._stopping = True
        self.wake()  # through wake(): a worker that waits on more than the condition hears it
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s worker did not stop within %.1f s", self.part, timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _run(self) -> None:
        ready = False
        try:
            while not self._stopping:
                try:
                    if not ready:
                        self.setup()  # retried: a part that cannot start now may later
                        ready = True
                    wait = self.step()
                except Exception:
                    log.exception("%s worker step failed", self.part)
                    wait = IDLE_WAIT_S
                with self._wake:
                    if not self._woken and not self._stopping and wait > 0:
                        self._wake.wait(min(wait, IDLE_WAIT_S))
                    self._woken = False
        finally:
            self.teardown()

    def setup(self) -> None:
        """On the worker's thread, before the first step; an exception here is logged and
        setup is tried again later."""

    def store(self) -> Store | None:
        """This worker's own connection to the event store, opened on first use and opened
        again when the file was replaced (a corrupt store moved aside by the owner); None
        while the store cannot be opened."""
        if self._store is not None and self._store.replaced():
            log.warning("%s worker: the event store was replaced; reopening", self.part)
            self._store.close()
            self._store = None
        if self._store is None:
            try:
                self._store = Store(self._db_path, on_corrupt=self._on_corrupt)
            except StorageError as e:
                log.warning("%s worker cannot open the event store: %s", self.part, e)
                return None
        return self._store

    def require_store(self) -> Store:
        store = self.store()
        if store is None:
            raise StorageError(f"{self.part} worker: the event store cannot be opened")
        return store

    def owed(self, transport: str, limit: int, clock_steps: ClockStepWatch) -> Owed | None:
        """For a transport's worker: the oldest ``limit`` events ``transport`` still
        owes, their retry times first moved by any step of the wall clock (a backoff
        keeps its length); None while the store cannot be read."""
        store = self.store()
        if store is None:
            return None
        now = clock_steps.follow(store)
        try:
            return Owed(store, store.pending_deliveries(transport, limit), now)
        except StorageError as e:
            log.warning("%s worker cannot read what it owes: %s", self.part, e)
            return None

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def step(self) -> float:
        """Do what is due; return how long to sleep unless woken."""
        raise NotImplementedError

    def teardown(self) -> None:
        """On the worker's thread, after the last step."""
