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
import unicodedata
from concurrent.futures import Future
from dataclasses import dataclass, field

from edge import routing
from edge.config import Config, Contact
from edge.errors import ModemError, StorageError
from edge.events import Event
from edge.modem.at import PortLost, Urc
from edge.modem.modem import Modem, ModemTimings
from edge.modem.pdu import (TON_ALPHANUMERIC, TON_INTERNATIONAL, TON_NATIONAL, TON_UNKNOWN,
                            Deliver)
from edge.sms_limits import (HOUR_S, REFUSALS_PER_HOUR, RateWindow, command_after_pin,
                             mask_pin)
from edge.sms_text import alert_text, command_reply, help_text, status_text
from edge.store import SmsRow
from edge.worker import IDLE_WAIT_S, ThreadWorker

log = logging.getLogger(__name__)

# The site's country (spec §5: a national number on either side is read as +86).
SITE_COUNTRY_CODE = "86"
_E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
_CODE_AND_MOBILE = re.compile(SITE_COUNTRY_CODE + r"1[0-9]{10}")
_PHONE_NUMBER_TYPES = frozenset({TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL})
_NUMBER_TYPE_NAMES = {TON_UNKNOWN: "unknown", TON_INTERNATIONAL: "international",
                      TON_NATIONAL: "national", TON_ALPHANUMERIC: "alphanumeric"}
# The words of a command (spec §5), read after NFKC (full-width letters as ASCII) and in
# upper case: what each asks for.
COMMAND_WORDS = {"STATUS": "status", "状态": "status", "SILENCE": "silence", "解除": "silence",
                 "ACK": "acknowledge", "收到": "acknowledge"}
# Words people put around a command ("解除报警", "确认收到", "状态查询", "好的，收到") that
# change nothing. Any other word (不, 没, 吗, a name) makes the text no command: "不要解除"
# and "解除了吗" silence nothing.
FILLER_WORDS = frozenset({"报警", "警报", "警号", "确认", "查询", "请", "已", "了", "好的", "OK"})
# Longest first, so that "解除报警" is read as 解除 + 报警 whatever else is added.
_VOCABULARY = sorted((*COMMAND_WORDS, *FILLER_WORDS), key=len, reverse=True)
# Of the commands found in one text, the one obeyed: a silence word asks for more than
# 收到 ("收到，解除" silences); every reply shows the status anyway.
_COMMAND_PRECEDENCE = ("silence", "acknowledge", "status")
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
    """'status', 'silence' or 'acknowledge' for a command text, else None. Read tolerantly:
    any case, full-width letters, spaces, punctuation and emoji between words, filler
    words around them; a text with any other word is no command."""
    letters = "".join(ch for ch in unicodedata.normalize("NFKC", text).upper()
                      if unicodedata.category(ch)[0] in "LN")
    found = set()
    while letters:
        word = next((w for w in _VOCABULARY if letters.startswith(w)), None)
        if word is None:
            return None
        found.add(COMMAND_WORDS.get(word))
        letters = letters[len(word):]
    return next((c for c in _COMMAND_PRECEDENCE if c in found), None)


def e164(number: str) -> str | None:
    """``number`` in E.164 form, None when it is not a phone number: "+8613800138000" as
    it is, "0086…" (the international prefix dialled) as "+86…", a national number
    ("13800138000", or 0 and an area code) read with the site's country code."""
    if number.startswith("+"):
        digits = number[1:]
    elif number.startswith("00"):
        digits = number[2:]
    elif _CODE_AND_MOBILE.fullmatch(number):
        # Networks often send "8613800138000" with the type 'unknown': 86 and eleven
        # digits from 1 is no national number (a Chinese mobile has eleven digits).
        digits = number
    else:
        digits = SITE_COUNTRY_CODE + number.removeprefix("0")
    return "+" + digits if _E164_DIGITS.fullmatch(digits) else None


def same_number(a: str, b: str) -> bool:
    """Whether two phone numbers are the same subscriber: +8613800138000, 008613800138000
    and 13800138000 are; +13800138000 (another country, the same digits) is not."""
    return e164(a) is not None and e164(a) == e164(b)


def sender_e164(message: Deliver) -> str | None:
    """The sender's number in E.164 form; None for a sender name (an alphanumeric TP-OA,
    whatever its characters read) or any other type of address that is no phone's."""
    if message.type_of_number not in _PHONE_NUMBER_TYPES:
        return None
    return e164(message.sender)


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
        # Per sender (its E.164 number, or its name): refusals, the one refusal event that
        # says the rest of the hour is dropped, the one refusal texted to the contacts,
        # and replies.
        self._refusals = RateWindow(HOUR_S, REFUSALS_PER_HOUR)
        self._limit_announced = RateWindow(HOUR_S)
        self._refusals_texted = RateWindow(HOUR_S)
        self._replies = RateWindow(HOUR_S, cfg.sms.replies_per_hour)
        self._help_replies = RateWindow(cfg.sms.help_reply_every_s)
        self._counts = {"replies": 0, "replies_suppressed": 0, "refused": 0, "dropped": 0}

    # ------------------------------------------------------------------ any thread

    def status(self) -> dict:
        """The modem's health, and under "sms" what incoming SMS cost: replies sent and
        held back by the limits, refusals recorded and SMS dropped unrecorded."""
        return {**self._health, "sms": dict(self._counts)}

    def notify(self, event: Event) -> None:
        with self._memory_lock:
            if not event.seq:
                # The store could not take this event (disk full, broken card): its
                # immediate SMS go from memory now rather than wait for the store.
                self._memory += [_MemorySms(event, r.contact, r.phone, self._next_reference())
                                 for r in routing.sms_requests(self.cfg, event.kind, event.ts,
                                                               event.data)
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
                log.exception("SMS from %s not handled: %r", message.sender,
                              self._kept_text(message)[:80])

    def _kept_text(self, message: Deliver) -> str:
        """The text as it may be logged or stored: without the command PIN."""
        return mask_pin(message.text, self.cfg.sms.command_pin)

    def _handle_incoming(self, message: Deliver) -> None:
        number = sender_e164(message)  # None for a sender name: never a contact
        # Limits count per sender: its number, or its name (apart from a number of the
        # same characters).
        sender = number or f"{message.sender}/{message.type_of_number}"
        mono = self.daemon.clock.monotonic()
        contact = self._contact(number) if number else None
        if not self._refusals.allows(sender, mono):
            self._refuse_limited(message, sender, mono, contact)
            return
        words = command_after_pin(message.text, self.cfg.sms.command_pin)
        if contact is None or not contact.may_command or words is None:
            why = ("not_a_contact" if contact is None else
                   "may_not_command" if not contact.may_command else "pin")
            self._refusals.note(sender, mono)
            self._refuse(message, sender, mono, contact, {"reason": why})
            return
        command = parse_command(words)
        log.info("SMS command from %s (%s): %r", contact.name, message.sender,
                 self._kept_text(message))
        if command in ("silence", "acknowledge"):
            # Only the alarms raised before the SMS was written: its sender knew of those.
            sent_at = message.timestamp.timestamp() if message.timestamp else None
            act = self.daemon.silence if command == "silence" else self.daemon.acknowledge
            done = self.daemon.loop.call(act, contact.name, "sms", sent_at,
                                         timeout=OWNER_CALL_TIMEOUT_S)
            status = self.daemon.loop.call(self.daemon.status, timeout=OWNER_CALL_TIMEOUT_S)
            reply = command_reply(command, len(done), status, self.cfg)
        elif command == "status":
            status = self.daemon.loop.call(self.daemon.status, timeout=OWNER_CALL_TIMEOUT_S)
            reply = status_text(status, self.cfg)
        else:
            reply = help_text(self.cfg)
        self._reply(contact, sender, mono, reply, is_help=command is None)

    def _reply(self, contact: Contact, sender: str, mono: float, text: str, *,
               is_help: bool) -> None:
        """One reply per incoming SMS, within the per-sender limits: a phone that answers
        every SMS by itself costs a few SMS an hour, never a loop."""
        if (is_help and not self._help_replies.allows(sender, mono)) or \
                not self._replies.allows(sender, mono):
            self._counts["replies_suppressed"] += 1
            log.info("SMS from %s (%s) recorded, not answered: reply limit reached",
                     contact.name, sender)
            return
        self._replies.note(sender, mono)
        if is_help:
            self._help_replies.note(sender, mono)
        self._counts["replies"] += 1
        # Queued, not sent here: a reply that fails must not cost the commands read with it.
        self.send_direct(contact.phone, text).add_done_callback(
            _log_if_unsent(f"reply to {contact.name}"))

    def _refuse_limited(self, message: Deliver, sender: str, mono: float,
                        contact: Contact | None) -> None:
        """A sender refused REFUSALS_PER_HOUR times within the hour: its next SMS is
        one last `sms_refused` that says so; the rest of that hour's are dropped."""
        if not self._limit_announced.take(sender, mono):
            self._counts["dropped"] += 1
            return
        dropped_for_s = round(self._refusals.free_in(sender, mono))
        self._refuse(message, sender, mono, contact,
                     {"reason": "rate_limited", "dropped_for_s": dropped_for_s})

    def _refuse(self, message: Deliver, sender: str, mono: float, contact: Contact | None,
                extra: dict) -> None:
        """An `sms_refused` event: the number and the text (never the PIN); only the
        first of a sender's within the hour owes the contacts an SMS."""
        text = self._kept_text(message)
        log.warning("SMS from %s refused (%s): %r", message.sender, extra["reason"], text[:80])
        self._counts["refused"] += 1
        data = {"number": message.sender, "text": text[:640],
                "contact": contact.name if contact else None,
                "number_type": _NUMBER_TYPE_NAMES.get(message.type_of_number,
                                                      str(message.type_of_number)),
                **extra}
        if not self._refusals_texted.take(sender, mono):
            data["repeat"] = True  # recorded; routing owes it no SMS
        self.daemon.loop.post(self.daemon.record, "sms_refused", "modem", "短信指令", data)

    def _contact(self, number: str) -> Contact | None:
        return next((c for c in self.cfg.contacts if same_number(c.phone, number)), None)

    # --- outgoing ---------------------------------------------------------------------

    def _send_memory(self, mono: float) -> float:
        """Send the due SMS of unstored events; how long until the next one is due."""
        with self._memory_lock:
            due = [m for m in self._memory if m.next_try <= mono]
        for sms in due:
            try:
                text = alert_text(sms.event, self.cfg, to=sms.contact,
                                  now=self.daemon.clock.now())
                refs = self.modem.send_sms(sms.phone, text,
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
            except ModemError as e:
                future.set_exception(e)
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
            text = alert_text(event, self.cfg, fallback=row.fallback, to=row.contact,
                              now=self.daemon.clock.now())
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
