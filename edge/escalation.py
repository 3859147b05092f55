"""Escalation calls (spec §6 [escalation]): a panic or tamper alarm nobody acknowledges
within call_after_s rings the contacts in order, round after round, until someone
acknowledges (a `silenced` or `acknowledged` event) or the rounds run out.

The plan lives here, on the owner thread: it sees every event (as a worker does) and
decides when to ring whom. The dialing is the SMS worker's, which owns the modem: it
gets one call request at a time and answers with the call's result. The plan is kept in
the store's meta table, so a restart carries on with the call it was at.

When the next call rings is the owner loop's timer (monotonic); the store keeps it as a
wall time (ESCALATION_DUE) that clock steps move like the outbox's deadlines
(edge.clock.ClockSteps), written under ``deadlines()`` from the timer's time left."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from edge.clock import Clock, ClockSteps
from edge.config import Config, Contact
from edge.errors import StorageError
from edge.events import Event
from edge.owner import OwnerLoop, Timer
from edge.sms import CallRequest
from edge.store import ESCALATION_DUE, Store

log = logging.getLogger(__name__)

META_KEY = "escalation"
ESCALATED_KINDS = frozenset({"panic", "tamper"})
ENDING_KINDS = frozenset({"silenced", "acknowledged"})


class Dialer(Protocol):
    def request_call(self, call: CallRequest) -> None: ...
    def cancel_calls(self) -> None: ...


@dataclass
class Plan:
    """Where an escalation is: the alarm that started it (id), the alarms not yet
    acknowledged (ids), the round (from 1), the contact rung next (index). When it rings
    is the Escalation's timer."""

    alarm_id: str
    alarm_ids: list[str]
    round: int = 1
    index: int = 0
    ringing: bool = field(default=False, compare=False)  # not kept: a restart rings again

    def kept(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "ringing"})


class Escalation:
    """Fed every event by the daemon (notify, owner thread); rings through ``dialer``."""

    part = "modem"  # its calls are the modem's work

    def __init__(self, cfg: Config, loop: OwnerLoop, clock: Clock, clock_steps: ClockSteps,
                 dialer: Dialer, *, record: Callable[..., Event],
                 store: Callable[[], Store | None], latched: Callable[[], dict[str, Event]]):
        assert cfg.escalation is not None
        self.settings = cfg.escalation
        self.contacts: tuple[Contact, ...] = cfg.escalation_contacts()
        self.cfg = cfg
        self.loop = loop
        self.clock = clock
        self.clock_steps = clock_steps
        self.dialer = dialer
        self._record = record
        self._store = store
        self._latched = latched
        self.plan: Plan | None = None
        self._timer: Timer | None = None

    # --- the worker interface (owner thread) ------------------------------------------

    def start(self) -> None:
        """Carry on with the escalation kept in the store, if its alarms are still open."""
        kept = self._kept_plan()
        if kept is None:
            return
        plan, left_s = kept
        open_ids = {alarm.id for alarm in self._latched().values()}
        plan.alarm_ids = [a for a in plan.alarm_ids if a in open_ids]
        if not plan.alarm_ids:
            self._finish()
            return
        log.warning("escalation carries on: round %d, contact %d", plan.round, plan.index + 1)
        self.plan = plan
        self._schedule(left_s)

    def notify(self, event: Event) -> None:
        if event.kind in ESCALATED_KINDS and self.contacts:
            self._alarm_raised(event)
        elif event.kind in ENDING_KINDS and self.plan is not None:
            self._acknowledged(event.data.get("alarm_id"))

    def wake(self) -> None:
        pass

    def status(self) -> dict:
        return {}  # the calls made are `call` events

    def stop(self, timeout: float) -> None:
        if self._timer is not None:
            self._timer.cancel()

    # --- the plan -----------------------------------------------------------------------

    def _alarm_raised(self, alarm: Event) -> None:
        if self.plan is not None:
            self.plan.alarm_ids.append(alarm.id)
        else:
            self.plan = Plan(alarm.id, [alarm.id])
            self._schedule(self.settings.call_after_s)
        self._keep()

    def _acknowledged(self, alarm_id: str | None) -> None:
        assert self.plan is not None
        self.plan.alarm_ids = [a for a in self.plan.alarm_ids if a != alarm_id]
        if not self.plan.alarm_ids:
            log.info("escalation stops: the alarm is acknowledged")
            self.dialer.cancel_calls()  # hangs up a call ringing now
            self._finish()

    def _schedule(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.after(delay_s, self._ring)

    def _left_s(self) -> float:
        """Seconds until the next call rings (0: one rings now, or is asked for)."""
        if self._timer is None:
            return 0.0
        return max(0.0, self._timer.deadline - self.clock.monotonic())

    def _ring(self) -> None:
        plan, self._timer = self.plan, None
        if plan is None or plan.ringing:
            return
        plan.ringing = True
        contact = self.contacts[plan.index]
        self.dialer.request_call(CallRequest(
            contact.name, contact.phone, self.settings.ring_s,
            lambda result: self.loop.post(self._call_done, plan, contact, result)))

    def _call_done(self, plan: Plan, contact: Contact, result: str) -> None:
        """Owner thread: record the call, then the next contact (or round) rings."""
        self._record("call", contact.name, contact.name,
                     {"result": result, "alarm_id": plan.alarm_id, "round": plan.round})
        if self.plan is not plan:
            return  # acknowledged while it rang
        plan.ringing = False
        plan.index += 1
        if plan.index == len(self.contacts):
            plan.round, plan.index = plan.round + 1, 0
        if plan.round > self.settings.rounds:
            log.warning("escalation ends: %d rounds of calls, nobody acknowledged",
                        self.settings.rounds)
            self._finish()
            return
        self._schedule(0.0)
        self._keep()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.plan = None
        self._keep()

    # --- kept in the store ------------------------------------------------------------

    def _keep(self) -> None:
        """The plan, and when its next call rings in the wall time of the store's other
        deadlines."""
        store = self._store()
        if store is None:
            return
        try:
            with self.clock_steps.deadlines(store) as now:
                store.set_meta_values(
                    {META_KEY: self.plan.kept(), ESCALATION_DUE: str(now + self._left_s())}
                    if self.plan else {META_KEY: "", ESCALATION_DUE: ""})
        except StorageError as e:  # the calls go on; only a restart would forget them
            log.warning("escalation state not kept: %s", e)

    def _kept_plan(self) -> tuple[Plan, float] | None:
        """The plan kept in the store and the seconds until its next call. A call due
        further ahead than call_after_s cannot have been set so: the clock was stepped
        back while no daemon ran to move it, and the call waits call_after_s at most."""
        store = self._store()
        if store is None:
            return None
        try:
            with self.clock_steps.deadlines(store) as now:
                text, due = store.get_meta(META_KEY), store.get_meta(ESCALATION_DUE)
            if not text:
                return None
            kept = json.loads(text)
            kept.pop("due", None)  # kept in the plan before it had its own key: rings now
            left_s = float(due or 0.0) - now
            return Plan(**kept), min(max(0.0, left_s), self.settings.call_after_s)
        except (StorageError, ValueError, TypeError, AttributeError) as e:
            log.warning("escalation state unreadable, dropped: %s", e)
            return None
