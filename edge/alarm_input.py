"""Latching alarm inputs: a panic button or a tamper switch. A press sounds the siren and
raises an alarm that latches until someone silences it (GB 50394: an emergency alarm never
resets itself); the AlarmRule says what a press is (bounce, drill, alarm)."""

from __future__ import annotations

import datetime as dt

from edge.alarm_rule import Press
from edge.events import LATCH_STATE, LATCHING_KINDS
from edge.input_handler import InputHandler


class LatchingAlarm(InputHandler):
    trips_siren = True

    def restore(self, now: dt.datetime, mono: float) -> None:
        rule = self.site.rule
        last = self.site.last_event(self.inp.name, LATCH_STATE)
        if last is not None and last.kind in LATCHING_KINDS:
            rule.latched[self.inp.name] = last
            rule.resume(last, now, mono)
        elif self.site.pin_active(self.inp.name):
            # Already pressed or tripped as we start (the lid opened while the power was
            # off): that is an alarm, not a state to take for granted.
            self.edge(True, mono, now)

    def edge(self, active: bool, mono: float, wall: dt.datetime) -> None:
        if not active:
            return
        site, rule, inp = self.site, self.site.rule, self.inp
        # The siren first (gpiozero's thread may have tripped it already): nothing, not
        # even the disk, stands in front of it.
        press = rule.press(inp.name, mono)
        if press is Press.DRILL:
            # A drill is recorded as one and never pages the platform as real.
            extra = {"account": rule.drill_account} if rule.drill_account else None
            site.record("drill", inp.name, inp.label, extra, time=wall)
        elif press is Press.TEST:
            site.tested(inp.name, wall)  # no alarm, no latch: the chirp said it works
        elif press is Press.ALARM and inp.name not in rule.latched:
            # (pressed again while latched: it sounds again, the alarm is already raised)
            rule.latched[inp.name] = site.record(inp.kind, inp.name, inp.label, time=wall)


class PanicButton(LatchingAlarm):
    drill_applies = True


class TamperSwitch(LatchingAlarm):
    """Drill mode never hides a tamper: the box is opened for real."""
