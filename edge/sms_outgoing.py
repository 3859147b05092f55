"""The pieces of the SMS worker's outgoing side: the order of SMS (rank), retries, marked
copies after a lost confirmation, the bounded records of SMS sent that the store does not
hold (yet), and the daily summary's sender (last of all)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple, TypeVar

from edge.config import Config, Contact
from edge.errors import ModemError, StorageError
from edge.kinds import OTHER_RANK, SMS_RANKS, SUMMARY_RANK
from edge.modem.at import AtTimeout, PortLost
from edge.store import Store
from edge.summary import Decided, mark_sent, owed, with_signal

log = logging.getLogger(__name__)

SEND_RETRY_FIRST_S = 10.0
SEND_RETRY_MAX_S = 300.0
# What the worker holds in memory is bounded; over a cap the least urgent goes (and is
# logged): an SMS of an unstored event still goes from the outbox once the event is
# stored; a forgotten record of a sent SMS may cost a duplicate, never a lost alarm.
SENT_RECORDS_CAP = 500  # records of SMS sent, in each of the worker's two tables

T = TypeVar("T")
# The key of a record of an SMS sent: (event id, contact) or (event seq, contact).
K = TypeVar("K", tuple[str, str], tuple[int, str])


def sms_rank(kind: str) -> int:
    """Where an SMS of an event of ``kind`` goes in the order (lowest first)."""
    return SMS_RANKS.get(kind, OTHER_RANK)


def most_urgent(entries: list[T], cap: int, kind: Callable[[T], str]
                 ) -> tuple[list[T], list[T]]:
    """The ``cap`` most urgent of ``entries`` (earlier first among equals), and the rest."""
    ordered = sorted(entries, key=lambda entry: sms_rank(kind(entry)))
    return ordered[:cap], ordered[cap:]


def confirmation_lost(error: Exception) -> bool:
    """Whether the modem may have sent the message although the send failed: the PDU had
    gone when the modem vanished or its answer did not come."""
    return isinstance(error, (AtTimeout, PortLost)) and error.data_sent


def resend_reference(seq: int) -> int:
    """The concatenation reference of a row's marked copy: not the first copy's, so that a
    phone holding parts of both never joins them into one message."""
    return (seq + 128) % 256


def retry_delay(attempts: int) -> float:
    """The pause after the ``attempts``-th failed send of one SMS."""
    return min(SEND_RETRY_MAX_S, SEND_RETRY_FIRST_S * 2 ** (attempts - 1))


class Taken(NamedTuple):
    """An SMS the modem took: its event's kind (what a cap keeps first) and +CMGS refs."""

    kind: str
    refs: list[int]


@dataclass(frozen=True)
class Next:
    """The most urgent due SMS of one source, and how to send it."""

    rank: float
    send: Callable[[], None]


def next_if_waiting(lock: threading.Lock, queue: list, rank: float,
                    send: Callable[[], None]) -> Next | None:
    """``send`` at ``rank`` when ``queue`` (guarded by ``lock``) holds anything."""
    with lock:
        waiting = bool(queue)
    return Next(rank, send) if waiting else None


def remember(table: dict[K, Taken], key: K, taken: Taken, what: str) -> int:
    """Keep ``taken`` in ``table``, forgetting the least urgent over SENT_RECORDS_CAP: how
    many were forgotten."""
    table[key] = taken
    if len(table) <= SENT_RECORDS_CAP:
        return 0
    kept, dropped = most_urgent(list(table.items()), SENT_RECORDS_CAP,
                                lambda item: item[1].kind)
    table.clear()
    table.update(kept)
    for (event, contact), forgotten in dropped:
        log.error("record of the %s SMS of event %s to %s (%s) forgotten: over %d kept; "
                  "it may be sent again", forgotten.kind, event, contact, what,
                  SENT_RECORDS_CAP)
    return len(dropped)


def may_go_unrecorded(unrecorded: dict[tuple[int, str], Taken], kind: str) -> bool:
    """With SENT_RECORDS_CAP SMS sent but not recorded (the store takes no writes), only
    one more urgent than the least urgent of them goes, which is forgotten for it: no SMS
    is sent over and over, and alarms still go."""
    if len(unrecorded) < SENT_RECORDS_CAP:
        return True
    return sms_rank(kind) < max(sms_rank(t.kind) for t in unrecorded.values())


class SummarySender:
    """The daily summary, sent after every other SMS: its failed sends are retried, and
    the contacts it went to that the store did not note are kept here (at most one day's
    recipients), never sent again. ``send(number, text)`` sends on the worker's modem;
    ``signal()`` is the modem's last signal."""

    def __init__(self, cfg: Config, send: Callable[[str, str], list[int]],
                 signal: Callable[[], int | None]):
        self.cfg = cfg
        self._send = send
        self._signal = signal
        self._attempts = 0
        self._next_try = 0.0  # monotonic
        self._unnoted: dict[str, Decided] = {}  # contact name → the summary

    def next(self, store: Store | None, mono: float) -> Next | None:
        """The daily summary to its next contact, when it is owed and its retry is due."""
        if store is None or mono < self._next_try:
            return None
        try:
            self._note_sent(store)
            due = owed(self.cfg, store, skip=set(self._unnoted))
        except StorageError as e:
            log.warning("daily summary unreadable: %s", e)
            return None
        if due is None:
            return None
        return Next(SUMMARY_RANK, partial(self._send_to, store, *due, mono))

    def _send_to(self, store: Store, contact: Contact, summary: Decided, mono: float) -> None:
        try:
            self._send(contact.phone, with_signal(summary.text, self._signal()))
        except ModemError as e:
            self._attempts += 1
            self._next_try = mono + retry_delay(self._attempts)
            log.warning("daily summary to %s failed (%s); retry in %.0f s", contact.name, e,
                        self._next_try - mono)
            raise
        self._attempts = 0
        self._unnoted[contact.name] = summary
        log.info("daily summary of %s sent to %s", summary.day, contact.name)
        try:
            self._note_sent(store)
        except StorageError as e:
            log.error("daily summary sent to %s but not noted (%s); it is not sent again",
                      contact.name, e)

    def _note_sent(self, store: Store) -> None:
        """Note in the store the contacts the summary went to (StorageError: kept here,
        never sent again, noted at the next try)."""
        for name, summary in list(self._unnoted.items()):
            mark_sent(store, name, summary)
            del self._unnoted[name]
