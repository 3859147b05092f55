"""SMS from outside: which texts are commands, which senders are contacts (spec §5), and
the incoming handler that answers a contact's command or records a refusal, within the
per-sender limits. It runs on the SMS worker's thread; replies are queued, not sent here."""

from __future__ import annotations

import logging
import re
import unicodedata
from concurrent.futures import Future
from typing import Callable

from edge.config import Config, Contact
from edge.modem.pdu import (TON_ALPHANUMERIC, TON_INTERNATIONAL, TON_NATIONAL, TON_UNKNOWN,
                            Deliver)
from edge.port import WorkerPort
from edge.sms_limits import (ALL_SENDERS, HOUR_S, REFUSAL_SMS_PER_HOUR, REFUSALS_PER_HOUR,
                             RateWindow, command_after_pin, mask_pin, pin_attempted)
from edge.sms_text import command_reply, help_text, status_text

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

# Queues an SMS to a number (the worker's send_direct): its +CMGS references, or the error.
SendDirect = Callable[[str, str], "Future[list[int]]"]


class IncomingCommands:
    """Answers the SMS the worker reads: a contact's command is done on the owner loop and
    answered through ``send_direct``; anything else is an `sms_refused` event. Counts what
    incoming SMS cost (``counts``, shown by status)."""

    def __init__(self, cfg: Config, port: WorkerPort, send_direct: SendDirect):
        self.cfg = cfg
        self.port = port
        self._send_direct = send_direct
        # Per sender (its E.164 number, or its name): refusals, the one refusal event that
        # says the rest of the hour is dropped, the one refusal texted to the contacts,
        # and replies.
        self._refusals = RateWindow(HOUR_S, REFUSALS_PER_HOUR)
        self._limit_announced = RateWindow(HOUR_S)
        self._refusals_texted = RateWindow(HOUR_S)
        # And all senders together: a flood from ever new numbers is no flood of SMS.
        self._refusals_texted_all = RateWindow(HOUR_S, REFUSAL_SMS_PER_HOUR)
        self._replies = RateWindow(HOUR_S, cfg.sms.replies_per_hour)
        self._help_replies = RateWindow(cfg.sms.help_reply_every_s)
        self.counts = {"replies": 0, "replies_suppressed": 0, "refused": 0,
                       "incoming_dropped": 0}

    def kept_text(self, message: Deliver) -> str:
        """The text as it may be logged or stored: without the command PIN."""
        return mask_pin(message.text, self.cfg.sms.command_pin)

    def handle(self, message: Deliver) -> None:
        number = sender_e164(message)  # None for a sender name: never a contact
        # Limits count per sender: its number, or its name (apart from a number of the
        # same characters).
        sender = number or f"{message.sender}/{message.type_of_number}"
        mono = self.port.clock.monotonic()
        contact = self._contact(number) if number else None
        if not self._refusals.allows(sender, mono):
            self._refuse_limited(message, sender, mono, contact)
            return
        words = command_after_pin(message.text, self.cfg.sms.command_pin)
        if contact is None or not contact.may_command or words is None:
            why = ("not_a_contact" if contact is None else
                   "may_not_command" if not contact.may_command else
                   "pin" if pin_attempted(message.text) else "pin_missing")
            # A contact's own reply without the PIN (收到 to any message, an auto-reply)
            # guesses nothing: counting it would let the contact lock itself out. Wrong
            # PINs count, so the PIN cannot be found by trying.
            if why != "pin_missing":
                self._refusals.note(sender, mono)
            self._refuse(message, sender, mono, contact, {"reason": why})
            if why == "pin_missing" and contact is not None:  # told how, within the limits
                self._reply(contact, sender, mono, help_text(self.cfg), is_help=True)
            return
        command = parse_command(words)
        log.info("SMS command from %s (%s): %r", contact.name, message.sender,
                 self.kept_text(message))
        if command in ("silence", "acknowledge"):
            # Only the alarms raised before the SMS was written: its sender knew of those.
            sent_at = message.timestamp.timestamp() if message.timestamp else None
            owner = self.port.commands
            act = owner.silence if command == "silence" else owner.acknowledge
            done = self.port.call(act, contact.name, "sms", sent_at)
            status = self.port.call(owner.status)
            reply = command_reply(command, len(done), status, self.cfg)
        elif command == "status":
            status = self.port.call(self.port.commands.status)
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
            self.counts["replies_suppressed"] += 1
            log.info("SMS from %s (%s) recorded, not answered: reply limit reached",
                     contact.name, sender)
            return
        self._replies.note(sender, mono)
        if is_help:
            self._help_replies.note(sender, mono)
        self.counts["replies"] += 1
        # Queued, not sent here: a reply that fails must not cost the commands read with it.
        self._send_direct(contact.phone, text).add_done_callback(
            _log_if_unsent(f"reply to {contact.name}"))

    def _refuse_limited(self, message: Deliver, sender: str, mono: float,
                        contact: Contact | None) -> None:
        """A sender refused REFUSALS_PER_HOUR times within the hour: its next SMS is
        one last `sms_refused` that says so; the rest of that hour's are dropped."""
        if not self._limit_announced.take(sender, mono):
            self.counts["incoming_dropped"] += 1
            return
        dropped_for_s = round(self._refusals.free_in(sender, mono))
        self._refuse(message, sender, mono, contact,
                     {"reason": "rate_limited", "dropped_for_s": dropped_for_s})

    def _refuse(self, message: Deliver, sender: str, mono: float, contact: Contact | None,
                extra: dict) -> None:
        """An `sms_refused` event: the number and the text (never the PIN); only the
        first of a sender's within the hour owes the contacts an SMS."""
        text = self.kept_text(message)
        log.warning("SMS from %s refused (%s): %r", message.sender, extra["reason"], text[:80])
        self.counts["refused"] += 1
        data = {"number": message.sender, "text": text[:640],
                "contact": contact.name if contact else None,
                "number_type": _NUMBER_TYPE_NAMES.get(message.type_of_number,
                                                      str(message.type_of_number)),
                **extra}
        if not (self._refusals_texted.allows(sender, mono)
                and self._refusals_texted_all.take(ALL_SENDERS, mono)):
            data["repeat"] = True  # recorded; routing owes it no SMS
        else:
            self._refusals_texted.note(sender, mono)
        self.port.record("sms_refused", "modem", "短信指令", data)

    def _contact(self, number: str) -> Contact | None:
        return next((c for c in self.cfg.contacts if same_number(c.phone, number)), None)

