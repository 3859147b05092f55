"""Escalation voice calls on the SMS worker's modem: the queue of calls asked for (any
thread), hung up by an acknowledgement or the stop, each rung as one turn of the worker
after every alarm SMS due (an alarm SMS that falls due while it rings goes first)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from typing import Callable

from edge.errors import ModemError
from edge.kinds import ALARM_RANK
from edge.modem.modem import Modem
from edge.sms_outgoing import Next, next_if_waiting

log = logging.getLogger(__name__)

CALL_QUEUE_CAP = 4  # escalation calls waiting for the modem (the escalation asks one at a time)
# An escalation call is one turn of the worker after every alarm SMS due, before replies.
CALL_RANK = ALARM_RANK + 0.5


@dataclass(frozen=True)
class CallRequest:
    """An escalation call: ``done(result)`` is called on the worker's thread with
    "answered", "no answer", "busy" or "failed"."""

    contact: str
    phone: str
    ring_s: float
    done: Callable[[str], None]


class EscalationCalls:
    """The calls waiting for the modem. ``alarm_due()`` is asked between the polls of a
    ringing call (on the worker's thread): it reads new SMS (a SILENCE hangs up at once)
    and says whether an alarm SMS is due, which hangs up the call to go first."""

    def __init__(self, modem: Modem, alarm_due: Callable[[], bool]):
        self._modem = modem
        self._alarm_due = alarm_due
        self._lock = threading.Lock()
        self._calls: list[CallRequest] = []  # under _lock
        self._cancel = threading.Event()  # set: hang up the call ringing now
        self._closing = False  # under _lock: close() was called, no call starts

    def request(self, call: CallRequest) -> bool:
        """Queue ``call`` (any thread); False (and the call failed) when the queue is full."""
        with self._lock:
            full = len(self._calls) >= CALL_QUEUE_CAP
            if not full:
                self._calls.append(call)
        if full:
            log.error("call to %s not queued: %d calls already wait", call.contact,
                      CALL_QUEUE_CAP)
            call.done("failed")
        return not full

    def cancel(self) -> None:
        """Someone acknowledged: the calls waiting are dropped, the one ringing hangs up."""
        with self._lock:
            self._calls.clear()
            self._cancel.set()

    def close(self) -> None:
        """The worker stops: a call ringing hangs up, none starts."""
        with self._lock:
            self._closing = True
            self._cancel.set()

    def next(self) -> Next | None:
        return next_if_waiting(self._lock, self._calls, CALL_RANK, self._make_call)

    def _make_call(self) -> None:
        with self._lock:
            if not self._calls or self._closing:
                return  # cancelled meanwhile
            call = self._calls.pop(0)
            # Asked for after any acknowledgement so far (that emptied the queue).
            self._cancel.clear()
        log.info("escalation: calling %s", call.contact)
        yielded = threading.Event()
        try:
            result = self._modem.voice_call(call.phone, ring_s=call.ring_s,
                                            cancel=self._cancel,
                                            between=partial(self._between_polls, yielded))
        except ModemError:
            call.done("failed")
            raise
        if self._closing:
            return  # cut short by the stop: the kept plan rings this contact at the next start
        if yielded.is_set() and not self._cancel.is_set():
            log.warning("escalation: call to %s hung up for an alarm SMS; it rings again "
                        "after it", call.contact)
            with self._lock:
                self._calls.insert(0, call)
            return
        log.info("escalation: call to %s: %s", call.contact, result)
        call.done(result)

    def _between_polls(self, yielded: threading.Event) -> bool:
        """Hang up (``yielded``) when an alarm SMS falls due while the call rings."""
        if self._alarm_due():
            yielded.set()
            return True
        return False
