"""The SMS worker: owns the modem; sends the SMS outbox, answers commands from contacts,
and watches the modem's health. Everything here runs on the worker's own thread: a modem
that hangs delays SMS, never the siren.

Exactly one SMS per (event, contact): the row is created with the event, and marked sent
in the transaction that records the modem's +CMGS references. The one window left is a
crash (or power cut) after the modem took the message and before that commit: the next
start sends it again. A duplicate is the price of never losing an alarm.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from edge import routing
from edge.config import Config, Contact
from edge.errors import ModemError, StorageError
from edge.events import Event
from edge.modem.at import PortLost, Urc
from edge.modem.modem import Modem, ModemTimings
from edge.modem.pdu import Deliver
from edge.sms_text import alert_text, help_text, status_text
from edge.store import SmsRow
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

_NUMERIC_SENDER = re.compile(r"\+?[0-9]{3,20}")
STATUS_WORDS = frozenset({"STATUS", "状态"})
SILENCE_WORDS = frozenset({"SILENCE", "解除", "收到"})
SEND_RETRY_FIRST_S = 10.0
SEND_RETRY_MAX_S = 300.0
# An SMS the network keeps refusing is retried about a day (10 s, 20 s … then every
# SEND_RETRY_MAX_S), then recorded as failed. Counted in attempts, not from the event's
# time: a clock stepped forward must not make a fresh alarm's SMS give up at once.
SEND_GIVE_UP_ATTEMPTS = 292
OWNER_CALL_TIMEOUT_S = 5.0


def retry_delay(attempts: int) -> float:
    """The pause after the ``attempts``-th failed send of one SMS."""
    return min(SEND_RETRY_MAX_S, SEND_RETRY_FIRST_S * 2 ** (attempts - 1))


@dataclass
class _MemorySms:
    """An alarm SMS of an event the store could not take: kept and retried here until it
    is sent or the event is stored (its outbox row then takes over)."""

    event: Event
    contact: str
    phone: str
    reference: int  # ties the parts together, the same on every retry
    sent: list[int] = field(default_factory=list)  # +CMGS refs of the parts that went
    attempts: int = 0
    next_try: float = 0.0  # monotonic


def _log_if_unsent(what: str):
    """A done-callback for a send_direct() future that nobody waits on."""
    def check(future: Future) -> None:
        if future.exception() is not None:
            log.error("%s not sent: %s", what, future.exception())
    return check


def parse_command(text: str) -> str | None:
    """'status' or 'silence' for a command text (any case, stray punctuation), else None."""
    word = re.sub(r"[\s。.!！?？,，]+", "", text).upper()
    if word in STATUS_WORDS:
        return "status"
    if word in SILENCE_WORDS:
        return "silence"
    return None


def same_number(a: str, b: str) -> bool:
    """Whether two phone numbers are the same subscriber: +8613800138000, 8613800138000,
    008613800138000 and 13800138000 all are."""
    return _national(a) == _national(b)


def _national(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) == 11:
            return digits[len(prefix):]
    return digits


class SmsWorker(ThreadWorker):
    part = "modem"

    def __init__(self, cfg: Config, daemon, *, timings: ModemTimings = ModemTimings()):
        """``timings``: the modem's deadlines (tests shorten them)."""
        super().__init__(cfg.storage.db_path)
        self.cfg = cfg
        self.daemon = daemon
        self.modem = Modem.from_config(cfg, on_urc=self._on_urc, on_lost=self.wake,
                                       timings=timings)
        self._direct: list[tuple[str, str, Future]] = []  # test-sms, command replies
        self._direct_lock = threading.Lock()
        self._next_health = 0.0
        self._references = itertools.count(1)
        self._memory: list[_MemorySms] = []
        self._memory_lock = threading.Lock()
        # (event id, contact) → +CMGS refs of SMS sent from memory: the store owes them
        # nothing, and a row made for one while it was in flight is marked, not sent.
        self._sent_from_memory: dict[tuple[str, str], list[int]] = {}
        # (seq, contact) → +CMGS refs of SMS the modem took but the store did not record:
        # never sent again, recorded when the store allows.
        self._unrecorded: dict[tuple[int, str], list[int]] = {}
        # No retry or fallback time we set lies further ahead than this.
        fallback_s = cfg.uplink.sms_fallback_after_s if cfg.uplink else 0
        self._horizon_s = max(SEND_RETRY_MAX_S, fallback_s) + 60.0
        self._scan_inbox = True  # after every (re)initialisation: read what came meanwhile
        self._health = {"ok": False, "signal": None, "reason": "starting", "operator": None}

    # ------------------------------------------------------------------ any thread

    def status(self) -> dict:
        return dict(self._health)

    def notify(self, event: Event) -> None:
        with self._memory_lock:
            if not event.seq:
                # The store could not take this event (disk full, broken card): its
                # immediate SMS go from memory now rather than wait for the store.
                self._memory += [_MemorySms(event, r.contact, r.phone, self._next_reference())
                                 for r in routing.sms_requests(self.cfg, event.kind, event.ts)
                                 if not r.fallback]
            else:  # stored at last: its outbox rows take over from memory
                self._memory = [m for m in self._memory if m.event.id != event.id]
        self.wake()  # a stored event may owe an SMS; the outbox query decides

    def sent_from_memory(self, event_id: str) -> set[str]:
        """The contacts that already got this (once unstored) event's SMS from memory;
        the store owes them nothing when the event is finally written."""
        return {c for e, c in list(self._sent_from_memory) if e == event_id}

    def send_direct(self, number: str, text: str) -> Future:
        """An SMS that is not an event's (test-sms, replies): sent soon, result in the
        future (the list of +CMGS references, or the ModemError)."""
        future: Future = Future()
        with self._direct_lock:
            self._direct.append((number, text, future))
        self.wake()
        return future

    def _on_urc(self, urc: Urc) -> None:
        if urc.line.startswith(("+CMTI:", "+CMT:")):
            self.wake()

    # ------------------------------------------------------------------ worker thread

    def teardown(self) -> None:
        self.modem.close()
        with self._direct_lock:
            pending, self._direct = self._direct, []
        for _, _, future in pending:
            future.set_exception(ModemError("the daemon is stopping"))
        self.close_store()

    def step(self) -> float:
        mono = self.daemon.clock.monotonic()
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
                return self.cfg.modem.health_s  # nothing changes until someone fixes the PIN
            return max(0.5, min(self.modem.retry_in, IDLE_WAIT_S))
        try:
            if mono >= self._next_health:
                self._check_health()
                self._next_health = mono + self.cfg.modem.health_s
            try:
                self._read_inbox(mono)
            except ModemError as e:  # an unreadable message never holds up the alarms
                log.warning("modem: reading new SMS failed: %s", e)
            memory_wait = self._send_memory(mono)
            store = self.store()
            outbox_wait = self._send_outbox(store) if store is not None else IDLE_WAIT_S
            self._send_direct()  # replies and test SMS after the alarms
        except ModemError as e:
            log.warning("modem: %s", e)
            return 1.0
        # A health_s shorter than the idle wait must still be kept.
        return min(memory_wait, outbox_wait, max(0.0, self._next_health - mono))

    # --- health -----------------------------------------------------------------------

    def _check_health(self) -> None:
        # Also list the inbox now and then: a +CMTI lost to line noise, or a modem that
        # refused every AT+CNMI, must not leave a SILENCE unread.
        self._scan_inbox = True
        health = self.modem.health()
        self._health = {"ok": health.ok, "signal": health.signal, "reason": health.reason,
                        "operator": health.operator}
        if health.ok:
            self.daemon.loop.post(self.daemon.part_ok, "modem")
        else:
            self.daemon.loop.post(self.daemon.part_failed, "modem", health.reason,
                                  f"signal={health.signal}")

    def _unhealthy(self, error: ModemError) -> None:
        health = self.modem.health_after(error)
        reason = health.reason or "silent"
        if self._health.get("reason") != reason:
            log.error("modem not usable (%s): %s", reason, error)
        self._health = {"ok": False, "signal": health.signal, "reason": reason,
                        "operator": health.operator}
        self.daemon.loop.post(self.daemon.part_failed, "modem", reason, str(error)[:200])

    # --- incoming ---------------------------------------------------------------------

    def _read_inbox(self, mono: float) -> None:
        scan, self._scan_inbox = self._scan_inbox, False
        for message in self.modem.receive(mono, scan=scan):
            try:
                self._handle_incoming(message)
            except Exception:  # one message that fails (a stuck owner call) spares the rest
                log.exception("SMS from %s not handled: %r", message.sender, message.text[:80])

    def _handle_incoming(self, message: Deliver) -> None:
        # An alphanumeric sender ("13800138000" typed as a name by a bulk-SMS gateway) is
        # never a contact, however its letters read.
        numeric = _NUMERIC_SENDER.fullmatch(message.sender) is not None
        contact = self._contact(message.sender) if numeric else None
        command = parse_command(message.text)
        if contact is None or not contact.may_command:
            log.warning("SMS from %s refused (not a commanding contact): %r", message.sender,
                        message.text[:80])
            self.daemon.loop.post(self.daemon.record, "sms_refused", "modem", "短信指令",
                                  {"number": message.sender, "text": message.text[:640],
                                   "contact": contact.name if contact else None})
            return
        log.info("SMS command from %s (%s): %r", contact.name, message.sender, message.text)
        if command == "silence":
            sent_at = message.timestamp.timestamp() if message.timestamp else None
            done = self.daemon.loop.call(self.daemon.silence, contact.name, "sms", sent_at,
                                         timeout=OWNER_CALL_TIMEOUT_S)
            status = self.daemon.loop.call(self.daemon.status, timeout=OWNER_CALL_TIMEOUT_S)
            reply = (f"【{self.cfg.site.name}】已解除{len(done)}个报警，警号已关闭。"
                     if done else f"【{self.cfg.site.name}】当前没有报警，警号已关闭。")
            reply += status_text(status, self.cfg).split("：", 1)[1]
        elif command == "status":
            status = self.daemon.loop.call(self.daemon.status, timeout=OWNER_CALL_TIMEOUT_S)
            reply = status_text(status, self.cfg)
        else:
            reply = help_text(self.cfg)
        # Queued, not sent here: a reply that fails must not cost the commands read with it.
        self.send_direct(contact.phone, reply).add_done_callback(
            _log_if_unsent(f"reply to {contact.name}"))

    def _contact(self, number: str) -> Contact | None:
        return next((c for c in self.cfg.contacts if same_number(c.phone, number)), None)

    # --- outgoing ---------------------------------------------------------------------

    def _send_memory(self, mono: float) -> float:
        """Send the due SMS of unstored events; how long until the next one is due."""
        with self._memory_lock:
            due = [m for m in self._memory if m.next_try <= mono]
        for sms in due:
            try:
                refs = self.modem.send_sms(sms.phone, alert_text(sms.event, self.cfg),
                                           reference=sms.reference,
                                           max_parts=self.cfg.sms.max_parts, sent=sms.sent)
            except PortLost:
                raise  # the modem, not this message: it goes once the modem is back
            except (ValueError, KeyError, IndexError) as e:  # a text that cannot be made
                log.error("SMS of unstored %s event to %s cannot be made: %s",
                          sms.event.kind, sms.contact, e)
                with self._memory_lock:
                    self._memory = [m for m in self._memory if m is not sms]
                continue
            except ModemError as e:
                sms.attempts += 1
                sms.next_try = mono + retry_delay(sms.attempts)
                log.error("SMS of unstored %s event to %s failed (%s); retry in %.0f s",
                          sms.event.kind, sms.contact, e, sms.next_try - mono)
                raise
            with self._memory_lock:
                self._sent_from_memory[(sms.event.id, sms.contact)] = refs
                self._memory = [m for m in self._memory if m is not sms]
            log.info("SMS of unstored %s event sent to %s from memory", sms.event.kind,
                     sms.contact)
        with self._memory_lock:
            waits = [m.next_try - mono for m in self._memory]
        return max(0.05, min(waits)) if waits else IDLE_WAIT_S

    def _next_reference(self) -> int:
        """A concatenation reference for an SMS that is not a stored row's (any thread:
        next() of an itertools.count is atomic)."""
        return next(self._references) % 256

    def _send(self, number: str, text: str) -> list[int]:
        return self.modem.send_sms(number, text, reference=self._next_reference(),
                                   max_parts=self.cfg.sms.max_parts)

    def _send_direct(self) -> None:
        while True:
            with self._direct_lock:
                if not self._direct:
                    return
                number, text, future = self._direct.pop(0)
            try:
                future.set_result(self._send(number, text))
            except Exception as e:  # a text or number the encoder refuses, too: answered
                future.set_exception(e)
                if isinstance(e, ModemError):
                    raise

    def _fail_direct(self, error: ModemError) -> None:
        with self._direct_lock:
            pending, self._direct = self._direct, []
        for _, _, future in pending:
            future.set_exception(error)

    def _send_outbox(self, store) -> float:
        self.daemon.clock_steps.follow(store)
        now = self.daemon.clock.now().timestamp()
        self._record_unrecorded(store, now)
        try:
            rows = store.due_sms(now, horizon_s=self._horizon_s)
        except StorageError as e:
            log.warning("SMS outbox unreadable: %s", e)
            return IDLE_WAIT_S
        rows = [r for r in rows if (r.seq, r.contact) not in self._unrecorded]
        for row in rows:
            if self.stopping:
                return 0
            self._send_row(store, row)
        if rows:
            return 0
        nxt = store.next_sms_due()
        return IDLE_WAIT_S if nxt is None else max(0.05, nxt - now)

    def _record_unrecorded(self, store, now: float) -> None:
        for (seq, contact), refs in list(self._unrecorded.items()):
            try:
                store.mark_sms(seq, contact, "sent", now=now, refs=refs)
            except StorageError:
                return
            del self._unrecorded[(seq, contact)]

    def _send_row(self, store, row: SmsRow) -> None:
        now = self.daemon.clock.now().timestamp
        event = store.event(row.seq)
        if event is None:
            return
        from_memory = self._sent_from_memory.get((event.id, row.contact))
        if from_memory is not None:  # sent while the row was being made: recorded, not resent
            self._unrecorded[(row.seq, row.contact)] = from_memory
            self._record_unrecorded(store, now())
            return
        refs = list(row.refs)  # a retry sends only the parts still missing
        try:
            text = alert_text(event, self.cfg, fallback=row.fallback)
            # The event's seq ties the parts together, the same on every retry.
            self.modem.send_sms(row.phone, text, reference=row.seq % 256,
                                max_parts=self.cfg.sms.max_parts, sent=refs)
        except PortLost:
            # The modem went away, not this message: it goes once the modem is back.
            if len(refs) > len(row.refs):
                try:
                    store.mark_sms(row.seq, row.contact, "pending", now=now(), refs=refs,
                                   error="the modem went away half-way")
                except StorageError as e:  # then the whole message goes again: never lost
                    log.warning("parts sent of SMS for event %d not recorded: %s", row.seq, e)
            raise
        except ModemError as e:
            attempts = row.attempts + 1
            if attempts >= SEND_GIVE_UP_ATTEMPTS:
                log.error("SMS for event %d to %s given up after %d attempts (a day): %s",
                          row.seq, row.contact, attempts, e)
                store.mark_sms(row.seq, row.contact, "failed", now=now(), refs=refs,
                               error=str(e))
            else:
                delay = retry_delay(attempts)
                log.warning("SMS for event %d to %s failed after %d part(s) (%s); retry in "
                            "%.0f s", row.seq, row.contact, len(refs), e, delay)
                store.mark_sms(row.seq, row.contact, "pending", now=now(), refs=refs,
                               error=str(e), next_try=now() + delay)
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
            self._unrecorded[(row.seq, row.contact)] = refs
            return
        log.info("SMS for %s event %d sent to %s (%d part(s))", event.kind, row.seq,
                 row.contact, len(refs))
