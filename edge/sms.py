"""The SMS worker: owns the modem; sends the SMS outbox, answers commands from contacts,
and watches the modem's health. Everything here runs on the worker's own thread: a modem
that hangs delays SMS, never the siren.

Exactly one SMS per (event, contact): the row is created with the event, and marked sent
in the transaction that records the modem's +CMGS references. At least once where that
cannot be known: a send whose confirmation was lost (the modem vanished or fell silent
after it took the message) goes again, marked （重发） as a copy; so does, unmarked, one
taken just before a crash (or power cut) that left no time for the commit. A duplicate is
the price of never losing an alarm.

One order for everything sent (spec §5): each turn sends the single most urgent SMS that
is due, of the outbox, the SMS of unstored events, the queue of replies and test SMS and
the daily summary (edge.summary: last of all), then looks again, so a new alarm is the
next SMS after the one in flight.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from functools import partial

from edge.config import Config
from edge.errors import ModemError, StorageError
from edge.events import Event
from edge.kinds import REPLY_RANK, SMS_RANKS
from edge.modem.at import PortLost, Urc
from edge.modem.modem import Modem, ModemTimings
from edge.port import Health, WorkerPort
# CallRequest, parse_command, same_number and sender_e164 are imported from here too.
from edge.sms_calls import CALL_RANK, CallRequest, EscalationCalls
from edge.sms_commands import IncomingCommands, parse_command, same_number, sender_e164
from edge.sms_memory import UnstoredSms
from edge.sms_outgoing import (SEND_RETRY_MAX_S, Next, SummarySender, Taken, confirmation_lost,
                               may_go_unrecorded, next_if_waiting, remember, resend_reference,
                               retry_delay, sms_rank)
from edge.sms_text import alert_text
from edge.status_doc import ModemHealth
from edge.store import SmsRow
from edge.worker import IDLE_WAIT_S, ThreadWorker

__all__ = ["CallRequest", "SmsWorker", "parse_command", "same_number", "sender_e164"]

log = logging.getLogger(__name__)

# An SMS the network keeps refusing is retried about a day (10 s, 20 s … then every
# SEND_RETRY_MAX_S), then recorded as failed. Counted in attempts, not from the event's
# time: a clock stepped forward must not make a fresh alarm's SMS give up at once.
SEND_GIVE_UP_ATTEMPTS = 292

# What the worker holds in memory is bounded (see also sms_memory.MEMORY_SMS_CAP and
# sms_outgoing.SENT_RECORDS_CAP).
REPLY_QUEUE_CAP = 20  # replies to commands and test SMS waiting for the modem


class SmsWorker(ThreadWorker):
    part = "modem"

    def __init__(self, cfg: Config, port: WorkerPort, *,
                 timings: ModemTimings = ModemTimings()):
        """``timings``: the modem's deadlines (tests shorten them)."""
        super().__init__(cfg.storage.db_path, port.store_corrupt)
        self.cfg = cfg
        self.port = port
        self._modem_health: Health = port.health(self.part)
        self.modem = Modem.from_config(cfg, on_urc=self._on_urc, on_lost=self.wake,
                                       timings=timings)
        self._direct: list[tuple[str, str, Future]] = []  # test-sms, command replies
        self._direct_lock = threading.Lock()
        self._calls = EscalationCalls(self.modem, self._alarm_due_in_call)
        self._next_health = 0.0
        self._references = itertools.count(1)
        self._unstored = UnstoredSms(cfg, port, self.modem, self._next_reference)
        # (seq, contact) → SMS the modem took but the store did not record: never sent
        # again, recorded when the store allows.
        self._unrecorded: dict[tuple[int, str], Taken] = {}
        self._dropped = 0  # records of _unrecorded that SENT_RECORDS_CAP made it forget
        self._summary = SummarySender(cfg, self._send, lambda: self._health["signal"])
        # No retry or fallback time we set lies further ahead than this.
        fallback_s = cfg.sms_fallback_after_s if cfg.has_transport else 0
        self._horizon_s = max(SEND_RETRY_MAX_S, fallback_s) + 60.0
        self._scan_inbox = True  # after every (re)initialisation: read what came meanwhile
        self._health: ModemHealth = {"ok": False, "signal": None, "reason": "starting",
                                     "operator": None}
        self._incoming = IncomingCommands(cfg, port, self.send_direct)

    # ------------------------------------------------------------------ any thread

    def status(self) -> dict:
        """The modem's health, and under "sms" what SMS cost: incoming (replies sent and
        held back by the limits, refusals recorded, SMS from rate-limited senders dropped
        unread) and outgoing (SMS kept in memory, replies waiting, and dropped by the
        memory caps)."""
        sms = self._unstored.counts()
        with self._direct_lock:
            sms["replies_queued"] = len(self._direct)
        sms.update(unrecorded=len(self._unrecorded), dropped=self._dropped + self._unstored.dropped,
                   **self._incoming.counts)
        return {**self._health, "lines_dropped": self.modem.lines_dropped, "sms": sms}

    def notify(self, event: Event) -> None:
        self._unstored.notify(event)
        self.wake()  # a stored event may owe an SMS; the outbox query decides

    def sent_from_memory(self, event_id: str) -> set[str]:
        """The contacts that already got this (once unstored) event's SMS from memory;
        the store owes them nothing when the event is finally written."""
        return self._unstored.sent_to(event_id)

    @property
    def send_deadline_s(self) -> float:
        """The longest the modem takes to confirm one SMS (its +CMGS deadline)."""
        return self.modem.timings.send_s

    def send_direct(self, number: str, text: str) -> Future[list[int]]:
        """An SMS that is not an event's (test-sms, replies): sent after the alarms and
        before other SMS, result in the future (the list of +CMGS references, or the
        ModemError; at once when REPLY_QUEUE_CAP of them already wait)."""
        future: Future[list[int]] = Future()
        with self._direct_lock:
            full = len(self._direct) >= REPLY_QUEUE_CAP
            if not full:
                self._direct.append((number, text, future))
        if full:
            future.set_exception(ModemError(
                f"SMS to {number} not queued: {REPLY_QUEUE_CAP} replies and test SMS "
                "already wait for the modem"))
        else:
            self.wake()
        return future

    def request_call(self, call: CallRequest) -> None:
        """Ring a contact when the alarm SMS due have gone (any thread)."""
        if self._calls.request(call):
            self.wake()

    def cancel_calls(self) -> None:
        """Someone acknowledged: the calls waiting are dropped, the one ringing hangs up."""
        self._calls.cancel()

    def _on_urc(self, urc: Urc) -> None:
        if urc.line.startswith(("+CMTI:", "+CMT:")):
            self.wake()

    def stop(self, timeout: float) -> None:
        self._calls.close()  # a call ringing hangs up, none starts: the turn ends
        super().stop(timeout)

    # ------------------------------------------------------------------ worker thread

    def teardown(self) -> None:
        self.modem.close()
        with self._direct_lock:
            pending, self._direct = self._direct, []
        for _, _, future in pending:
            future.set_exception(ModemError("the daemon is stopping"))
        self.close_store()

    def step(self) -> float:
        mono = self.port.clock.monotonic()
        try:
            was_ready = not self.modem.needs_init
            self.modem.ensure_ready()
            if not was_ready:
                self._scan_inbox = True
                self._next_health = 0.0
        except ModemError as e:
            self._unhealthy(e)
            self._fail_direct(e)
            if self._health["reason"] == "sim_pin":
                # Nothing changes until someone fixes the PIN. (An SmsWorker is made only
                # with a [modem]: the daemon's wiring, which mypy cannot follow.)
                return self.cfg.modem.health_s  # type: ignore[union-attr]
            return max(0.5, min(self.modem.retry_in, IDLE_WAIT_S))
        try:
            if mono >= self._next_health:
                self._check_health()
                # (a [modem] is there, as above)
                self._next_health = mono + self.cfg.modem.health_s  # type: ignore[union-attr]
            try:
                self._read_inbox(mono)
            except ModemError as e:  # an unreadable message never holds up the alarms
                log.warning("modem: reading new SMS failed: %s", e)
            send_wait = self._send_next(mono)
        except ModemError as e:
            log.warning("modem: %s", e)
            return 1.0
        if self.modem.unread_announced:  # a flood is read a few at a time, between sends
            return 0.0
        # A health_s shorter than the idle wait must still be kept.
        return min(send_wait, max(0.0, self._next_health - mono))

    # --- health -----------------------------------------------------------------------

    def _check_health(self) -> None:
        # Also list the inbox now and then: a +CMTI lost to line noise, or a modem that
        # refused every AT+CNMI, must not leave a SILENCE unread.
        self._scan_inbox = True
        was_ok = self._health["ok"]
        health = self.modem.health()
        self._health = {"ok": health.ok, "signal": health.signal, "reason": health.reason,
                        "operator": health.operator}
        if health.ok:
            self._modem_health.ok()
            if not was_ok:
                self._retry_now()
        else:
            self._modem_health.failed(health.reason or "unhealthy", f"signal={health.signal}")

    def _retry_now(self) -> None:
        """The modem can send again: the SMS it failed wait no longer for their backoff."""
        store = self.store()
        if store is None:
            return
        try:
            with self.port.clock_steps.deadlines(store) as now:
                moved = store.retry_sms_now(now)
        except StorageError as e:
            log.warning("SMS retries not brought forward: %s", e)
            return
        if moved:
            log.info("modem usable again: %d SMS retried now", moved)

    def _unhealthy(self, error: ModemError) -> None:
        health = self.modem.health_after(error)
        reason = health.reason or "silent"
        if self._health.get("reason") != reason:
            log.error("modem not usable (%s): %s", reason, error)
        self._health = {"ok": False, "signal": health.signal, "reason": reason,
                        "operator": health.operator}
        self._modem_health.failed(reason, str(error)[:200])

    # --- incoming ---------------------------------------------------------------------

    def _read_inbox(self, mono: float) -> None:
        scan, self._scan_inbox = self._scan_inbox, False
        for message in self.modem.receive(mono, scan=scan):
            try:
                self._incoming.handle(message)
            except Exception:  # one message that fails (a stuck owner call) spares the rest
                log.exception("SMS from %s not handled: %r", message.sender,
                              self._incoming.kept_text(message)[:80])

    # --- outgoing ---------------------------------------------------------------------

    def _send_next(self, mono: float) -> float:
        """Send the most urgent due SMS of all three sources (at an equal rank: unstored
        events', the outbox's, the replies'): 0 when one went (look again at once), else
        how long until one is due."""
        memory, memory_wait = self._unstored.next(mono)
        outbox, outbox_wait = self._next_row()
        ready = [n for n in (memory, outbox, self._next_direct(), self._calls.next(),
                             self._summary.next(self.store(), mono))
                 if n is not None]
        if not ready:
            return min(memory_wait, outbox_wait)
        min(ready, key=lambda n: n.rank).send()
        return 0.0

    def _remember_unrecorded(self, row: SmsRow, taken: Taken) -> None:
        self._dropped += remember(self._unrecorded, (row.seq, row.contact), taken,
                                  "not recorded")

    def _next_reference(self) -> int:
        """A concatenation reference for an SMS that is not a stored row's (any thread:
        next() of an itertools.count is atomic)."""
        return next(self._references) % 256

    def _send(self, number: str, text: str) -> list[int]:
        return self.modem.send_sms(number, text, reference=self._next_reference(),
                                   max_parts=self.cfg.sms.max_parts)

    def _next_direct(self) -> Next | None:
        return next_if_waiting(self._direct_lock, self._direct, REPLY_RANK, self._send_direct)

    def _send_direct(self) -> None:
        with self._direct_lock:
            number, text, future = self._direct.pop(0)
        try:
            future.set_result(self._send(number, text))
        except Exception as e:  # a text or number the encoder refuses, too: answered
            future.set_exception(e)
            if isinstance(e, ModemError):
                raise

    def _alarm_due_in_call(self) -> bool:
        """While a call rings: a SILENCE or 收到 is read at once (it hangs up); whether an
        alarm SMS fell due (it hangs up too: it goes first, the call after)."""
        mono = self.port.clock.monotonic()
        try:
            self._read_inbox(mono)
        except ModemError as e:
            log.warning("modem: reading new SMS during a call failed: %s", e)
        return any(n is not None and n.rank < CALL_RANK
                   for n in (self._unstored.next(mono)[0], self._next_row()[0]))

    def _fail_direct(self, error: ModemError) -> None:
        with self._direct_lock:
            pending, self._direct = self._direct, []
        for _, _, future in pending:
            future.set_exception(error)

    def _next_row(self) -> tuple[Next | None, float]:
        """The outbox's most urgent due SMS, or how long until one is due."""
        store = self.store()
        if store is None:
            return None, IDLE_WAIT_S
        now = self.port.clock_steps.follow(store)
        self._record_unrecorded(store, now)
        try:
            # One more than the rows sent but not recorded, which are passed over.
            rows = store.due_sms(now, limit=len(self._unrecorded) + 1,
                                 horizon_s=self._horizon_s, ranks=SMS_RANKS)
        except StorageError as e:
            log.warning("SMS outbox unreadable: %s", e)
            return None, IDLE_WAIT_S
        row = next((r for r in rows if (r.seq, r.contact) not in self._unrecorded), None)
        if row is not None and may_go_unrecorded(self._unrecorded, row.kind):
            return Next(sms_rank(row.kind), partial(self._send_row, store, row)), 0.0
        if row is not None:
            return None, IDLE_WAIT_S  # until the store records again, or a new alarm
        nxt = store.next_sms_due()
        return None, IDLE_WAIT_S if nxt is None else max(0.05, nxt - now)

    def _record_unrecorded(self, store, now: float) -> None:
        for (seq, contact), taken in list(self._unrecorded.items()):
            try:
                store.mark_sms(seq, contact, "sent", now=now, refs=taken.refs)
            except StorageError:
                return
            del self._unrecorded[(seq, contact)]

    def _send_row(self, store, row: SmsRow) -> None:
        now = self.port.clock.now().timestamp
        event = store.event(row.seq)
        if event is None:
            return
        from_memory = self._unstored.pop_sent(event.id, row.contact)
        if from_memory is not None:  # sent while the row was being made: recorded, not resent
            self._remember_unrecorded(row, from_memory)
            self._record_unrecorded(store, now())
            return
        refs = list(row.refs)  # a retry sends only the parts still missing
        try:
            text = alert_text(event, self.cfg, fallback=row.fallback, resent=row.maybe_sent,
                              to=row.contact, now=self.port.clock.now())
            # The event's seq ties the parts together, the same on every retry.
            reference = resend_reference(row.seq) if row.maybe_sent else row.seq % 256
            self.modem.send_sms(row.phone, text, reference=reference,
                                max_parts=self.cfg.sms.max_parts, sent=refs)
        except PortLost as e:
            # The modem went away, not this message: it goes once the modem is back.
            lost = confirmation_lost(e)
            if lost or len(refs) > len(row.refs):
                try:
                    store.mark_sms(row.seq, row.contact, "pending", now=now(),
                                   refs=[] if lost else refs, maybe_sent=lost,
                                   error="the modem went away before it confirmed" if lost
                                   else "the modem went away half-way")
                except StorageError as store_error:  # then it all goes again: never lost
                    log.warning("parts sent of SMS for event %d not recorded: %s", row.seq,
                                store_error)
            raise
        except ModemError as e:
            attempts = row.attempts + 1
            lost = confirmation_lost(e)
            if lost:  # the whole message goes again, marked as a copy
                refs = []
            if attempts >= SEND_GIVE_UP_ATTEMPTS:
                log.error("SMS for event %d to %s given up after %d attempts (a day): %s",
                          row.seq, row.contact, attempts, e)
                store.mark_sms(row.seq, row.contact, "failed", now=now(), refs=refs,
                               error=str(e), maybe_sent=lost)
            else:
                delay = retry_delay(attempts)
                log.warning("SMS for event %d to %s failed after %d part(s) (%s); retry in "
                            "%.0f s", row.seq, row.contact, len(refs), e, delay)
                with self.port.clock_steps.deadlines(store) as retry_from:
                    store.mark_sms(row.seq, row.contact, "pending", now=retry_from,
                                   refs=refs, error=str(e), next_try=retry_from + delay,
                                   maybe_sent=lost)
            raise
        except (ValueError, KeyError, IndexError) as e:
            # A text that cannot be made or encoded (a broken template): this row is set
            # aside, and the rows behind it still go.
            log.error("SMS for event %d to %s cannot be made: %s", row.seq, row.contact, e)
            store.mark_sms(row.seq, row.contact, "failed", now=now(), error=f"text: {e}")
            return
        try:
            store.mark_sms(row.seq, row.contact, "sent", now=now(), refs=refs)
        except StorageError as e:
            log.error("SMS for event %d to %s sent but not recorded (%s); it is not sent "
                      "again", row.seq, row.contact, e)
            self._remember_unrecorded(row, Taken(event.kind, refs))
            return
        log.info("SMS for %s event %d sent to %s (%d part(s))", event.kind, row.seq,
                 row.contact, len(refs))
