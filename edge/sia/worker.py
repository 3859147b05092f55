"""The SIA DC-09 transport: every stored event the alarm centre should see goes to the
receiver as an ADM-CID message, once acknowledged, in creation order, across restarts
(the store's delivery rows for transport "sia" are the queue, as "uplink"'s are the
platform's).

An event is delivered on its ACK. No answer, a broken connection, a DUH (the receiver
could not take it) or a NAK even on the receiver's own time: it waits with capped
exponential backoff (edge/uplink/backoff.py, the wait kept in the store) and holds the
queue, as the order matters to an operator; three such failures in a row are a `sia`
fault, the next ACK its recovery. An event the receiver still refuses (DUH) at its
DUH_LIMIT-th attempt is set aside (rejected, kept in the store, a `sia` fault) so that one
event the centre cannot read never holds back the alarms after it. Kinds with no Contact
ID code (edge/sia/contact_id.py) are marked rejected without being sent, and a heartbeat
with a newer one behind it is dropped as superseded: a centre back after a day wants the
latest periodic test, not three hundred.

With the queue empty, a NULL message (link test) goes after supervision_s without a
transmission, so the centre supervises the link and we notice its loss while idle.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Callable

from edge.config import Config, Sia
from edge.errors import SiaError, StorageError
from edge.port import FailureStreak, WorkerPort
from edge.sia.contact_id import contact_id
from edge.sia.frame import ACK, ADM_CID, DUH, NULL, RSP
from edge.sia.sequence import Sequence, stored_number
from edge.sia.transmitter import Transmitter, open_transmitter
from edge.store import Delivery, Store
from edge.store.schema import SIA_SEQUENCE
from edge.uplink.backoff import MAX_DELAY_S, next_delay
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

SIA = "sia"  # the part, and the transport of its delivery rows
# One exchange's deadline: connecting, sending and the whole answer. DC-09 receivers
# answer within a second or two; a mobile link's first connection may take several.
EXCHANGE_S = 10.0
# As the uplink: one lost exchange is weather, three in a row an outage.
FAULT_AFTER_FAILURES = 3
DUH_LIMIT = 5
# The events looked at per step: enough to see a newer heartbeat behind the first.
LOOK_AHEAD = 50
SETUP_RETRY_S = 30.0
NOT_SENT = "not sent: no Contact ID code"
SUPERSEDED = "not sent: a newer heartbeat"


class SiaWorker(ThreadWorker):
    part = SIA

    def __init__(self, cfg: Config, port: WorkerPort, *, exchange_s: float = EXCHANGE_S,
                 rng: Callable[[], float] = random.random):
        super().__init__(cfg.storage.db_path, port.store_corrupt)
        assert cfg.sia is not None  # built only when [sia] is configured
        self.cfg = cfg
        self.sia: Sia = cfg.sia
        self.port = port
        self._exchange_s = exchange_s
        self._rng = rng
        self._streak = FailureStreak(port.health(SIA), FAULT_AFTER_FAILURES)
        self._transmitter: Transmitter | None = None
        self._sequence: Sequence | None = None  # read from the store on the first step
        # The event being sent and its DC-09 number: a retry keeps the number.
        self._current: tuple[int, int] | None = None
        self._null_due = port.clock.monotonic() + self.sia.supervision_s
        self._null_failures = 0

    # ------------------------------------------------------------------ owner side

    def status(self) -> dict:
        # ok until it fails: the link counts as working before its first exchange.
        return {"ok": not self._streak.failing, "last_error": self._streak.last_error}

    # ------------------------------------------------------------------ worker thread

    def teardown(self) -> None:
        self.close_store()
        if self._transmitter is not None:
            self._transmitter.close()

    def step(self) -> float:
        transmitter = self._ensure_transmitter()
        if transmitter is None:
            return SETUP_RETRY_S
        owed = self.owed(SIA, LOOK_AHEAD, self.port.clock_steps)
        if owed is None:
            return IDLE_WAIT_S
        store, rows, now = owed
        sequence = self._ensure_sequence(store)
        if sequence is None:
            return IDLE_WAIT_S
        if rows:
            return self._deliver(store, transmitter, sequence, rows, now)
        return self._supervise(transmitter, sequence)

    def _ensure_transmitter(self) -> Transmitter | None:
        if self._transmitter is not None:
            return self._transmitter
        try:
            self._transmitter = open_transmitter(self.sia, self._utc_now, self._exchange_s)
        except SiaError as e:
            self._streak.failed("misconfigured", str(e), at_once=True)
        except ImportError as e:  # a hand-made venv without the library
            self._streak.failed("misconfigured",
                                f"AES needs the cryptography library: {e}", at_once=True)
        return self._transmitter

    def _ensure_sequence(self, store: Store) -> Sequence | None:
        """The message numbers, going on from the last start's (sequence.py)."""
        if self._sequence is None:
            try:
                last = stored_number(store.get_meta(SIA_SEQUENCE))
            except StorageError as e:
                log.warning("sia worker cannot read its last message number: %s", e)
                return None
            self._sequence = Sequence(last, self._reserve_numbers)
        return self._sequence

    def _reserve_numbers(self, last: int) -> bool:
        store = self.store()
        try:
            if store is not None:
                store.set_meta(SIA_SEQUENCE, str(last))
                return True
        except StorageError as e:
            log.warning("sia worker cannot keep its message numbers: %s", e)
        return False

    def _deliver(self, store: Store, transmitter: Transmitter, sequence: Sequence,
                 rows: list[Delivery], now: float) -> float:
        """``now``: the wall time the rows' retry times agree with (ThreadWorker.owed)."""
        head = rows[0]
        event = head.event
        superseded = event.kind == "heartbeat" and any(
            row.event.kind == "heartbeat" for row in rows[1:])
        cid = None if superseded else contact_id(event, self.cfg)
        if cid is None:
            store.mark_rejected(SIA, event.seq, SUPERSEDED if superseded else NOT_SENT,
                                self._now())
            return 0
        # A retry time beyond the longest backoff was set before the clock stepped back.
        if now < head.next_try <= now + MAX_DELAY_S:
            return head.next_try - now
        if self._current is None or self._current[0] != event.seq:
            self._current = (event.seq, sequence.next())
        try:
            answer = transmitter.send(ADM_CID, self._current[1], cid.data(self.sia.account))
        except SiaError as e:
            self._sent()
            self._retry(store, head, "unreachable", str(e))
            return 0
        self._sent()
        if answer.token in (ACK, RSP):
            # Without a key, anyone who can send to us as the receiver can ACK.
            store.mark_accepted(SIA, [event.seq], answer.token, self._now(),
                                verified=self.sia.key_file is not None)
            self._streak.ok()
        elif answer.token == DUH and head.attempts + 1 >= DUH_LIMIT:
            store.mark_rejected(SIA, event.seq, DUH, self._now())
            log.error("alarm centre cannot take event %s (seq %d, %s) after %d attempts; "
                      "set aside", event.id, event.seq, event.kind, DUH_LIMIT)
            self._streak.failed("refused", f"event {event.id} ({event.kind}) answered DUH",
                                at_once=True)
        elif answer.token == DUH:
            self._retry(store, head, "refused", "the receiver answered DUH")
        else:
            self._retry(store, head, "refused",
                        "the receiver answered NAK, also to its own time")
        return 0

    def _retry(self, store: Store, head: Delivery, reason: str, detail: str) -> None:
        delay = next_delay(head.attempts + 1, None, rng=self._rng)
        with self.port.clock_steps.deadlines(store) as retry_from:
            store.mark_retry(SIA, [head.event.seq], detail[:60], retry_from + delay)
        log.warning("alarm centre did not take event seq %d (%s); retry in %.1f s",
                    head.event.seq, detail, delay)
        self._streak.failed(reason, detail)

    def _supervise(self, transmitter: Transmitter, sequence: Sequence) -> float:
        """A NULL message when the link has been idle for supervision_s (sooner, with
        backoff, after a NULL that failed); how long until the next one."""
        if not self.sia.supervision_s:
            return IDLE_WAIT_S
        wait = self._null_due - self.port.clock.monotonic()
        if wait > 0:
            return wait
        try:
            answer = transmitter.send(NULL, sequence.next(), "]")
            failure = None if answer.token in (ACK, RSP) else \
                f"the receiver answered {answer.token} to a NULL message"
        except SiaError as e:
            failure = str(e)
        self._sent()
        if failure is None:
            self._null_failures = 0
            self._streak.ok()
        else:
            self._null_failures += 1
            log.warning("alarm centre link test failed: %s", failure)
            self._streak.failed("unreachable", failure)
            retry = next_delay(self._null_failures, None, rng=self._rng)
            self._null_due = self.port.clock.monotonic() + min(self.sia.supervision_s, retry)
        return 0

    def _sent(self) -> None:
        """Any transmission restarts the supervision interval (DC-09 5.5.2)."""
        self._null_due = self.port.clock.monotonic() + self.sia.supervision_s

    def _now(self) -> float:
        return self.port.clock.now().timestamp()

    def _utc_now(self) -> dt.datetime:
        return self.port.clock.now().astimezone(dt.timezone.utc)
