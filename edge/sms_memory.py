"""The SMS of events the store could not take (disk full, broken card): their immediate
SMS are kept in memory and sent from there, retried, until they go or the event is stored
(its outbox rows then take over); the ones sent are remembered, so that the store owes
them nothing when the event is finally written. Bounded: over MEMORY_SMS_CAP the least
urgent is dropped (it still goes from the outbox once the event is stored)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from edge import routing
from edge.config import Config
from edge.errors import ModemError
from edge.events import Event
from edge.modem.at import PortLost
from edge.modem.modem import Modem
from edge.port import WorkerPort
from edge.sms_outgoing import (Next, Taken, confirmation_lost, most_urgent, remember,
                               retry_delay, sms_rank)
from edge.sms_text import alert_text
from edge.worker import IDLE_WAIT_S

log = logging.getLogger(__name__)

MEMORY_SMS_CAP = 100  # SMS of unstored events waiting to go


@dataclass
class MemorySms:
    """An alarm SMS of an event the store could not take: kept and retried here until it
    is sent or the event is stored (its outbox row then takes over)."""

    event: Event
    contact: str
    phone: str
    reference: int  # ties the parts together, the same on every retry
    sent: list[int] = field(default_factory=list)  # +CMGS refs of the parts that went
    attempts: int = 0
    next_try: float = 0.0  # monotonic
    resent: bool = False  # an earlier attempt's confirmation was lost


class UnstoredSms:
    """The SMS of unstored events, and the records of those sent (any thread, under one
    lock; sent on the worker's thread). ``next_reference()`` gives a concatenation
    reference for a new message; ``dropped`` counts what the caps made it forget."""

    def __init__(self, cfg: Config, port: WorkerPort, modem: Modem,
                 next_reference: Callable[[], int]):
        self.cfg = cfg
        self.port = port
        self._modem = modem
        self._next_reference = next_reference
        self._lock = threading.Lock()
        self._waiting: list[MemorySms] = []
        # (event id, contact) → SMS sent from memory: the store owes them nothing, and a
        # row made for one while it was in flight is marked, not sent.
        self._sent: dict[tuple[str, str], Taken] = {}
        self.dropped = 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"memory": len(self._waiting), "sent_from_memory": len(self._sent)}

    def notify(self, event: Event) -> None:
        """An unstored event: its immediate SMS wait here; a stored one: its outbox rows
        take over from memory."""
        with self._lock:
            if not event.seq:
                self._waiting += [MemorySms(event, r.contact, r.phone, self._next_reference())
                                  for r in routing.sms_requests(self.cfg, event.kind, event.ts,
                                                                event.data)
                                  if not r.fallback]
                self._waiting, dropped = most_urgent(self._waiting, MEMORY_SMS_CAP,
                                                     lambda m: m.event.kind)
                self.dropped += len(dropped)
            else:
                self._waiting = [m for m in self._waiting if m.event.id != event.id]
                dropped = []
        for sms in dropped:
            log.error("SMS of unstored %s event to %s not kept in memory: %d more urgent "
                      "wait; it goes from the outbox once the event is stored",
                      sms.event.kind, sms.contact, MEMORY_SMS_CAP)

    def sent_to(self, event_id: str) -> set[str]:
        """The contacts that already got this (once unstored) event's SMS from memory."""
        return {c for e, c in list(self._sent) if e == event_id}

    def pop_sent(self, event_id: str, contact: str) -> Taken | None:
        """The SMS sent from memory for this event and contact, no longer kept here."""
        with self._lock:
            return self._sent.pop((event_id, contact), None)

    def next(self, mono: float) -> tuple[Next | None, float]:
        """The most urgent due SMS of an unstored event, or how long until one is due."""
        with self._lock:
            due = [m for m in self._waiting if m.next_try <= mono]
            waits = [m.next_try - mono for m in self._waiting]
        if due:
            sms = min(due, key=lambda m: sms_rank(m.event.kind))
            return Next(sms_rank(sms.event.kind), partial(self._send, sms, mono)), 0.0
        return None, max(0.05, min(waits)) if waits else IDLE_WAIT_S

    def _send(self, sms: MemorySms, mono: float) -> None:
        try:
            text = alert_text(sms.event, self.cfg, resent=sms.resent, to=sms.contact,
                              now=self.port.clock.now())
            refs = self._modem.send_sms(sms.phone, text, reference=sms.reference,
                                        max_parts=self.cfg.sms.max_parts, sent=sms.sent)
        except PortLost as e:
            self._resend_if_lost(sms, e)
            raise  # the modem, not this message: it goes once the modem is back
        except (ValueError, KeyError, IndexError) as e:  # a text that cannot be made
            log.error("SMS of unstored %s event to %s cannot be made: %s",
                      sms.event.kind, sms.contact, e)
            with self._lock:
                self._waiting = [m for m in self._waiting if m is not sms]
            return
        except ModemError as e:
            self._resend_if_lost(sms, e)
            sms.attempts += 1
            sms.next_try = mono + retry_delay(sms.attempts)
            log.error("SMS of unstored %s event to %s failed (%s); retry in %.0f s",
                      sms.event.kind, sms.contact, e, sms.next_try - mono)
            raise
        with self._lock:
            self._waiting = [m for m in self._waiting if m is not sms]
            self.dropped += remember(self._sent, (sms.event.id, sms.contact),
                                     Taken(sms.event.kind, refs), "sent from memory")
        log.info("SMS of unstored %s event sent to %s from memory", sms.event.kind,
                 sms.contact)

    def _resend_if_lost(self, sms: MemorySms, error: ModemError) -> None:
        """The confirmation was lost: the whole message goes again, marked, as a new one."""
        if confirmation_lost(error):
            sms.resent, sms.sent, sms.reference = True, [], self._next_reference()
