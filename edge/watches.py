"""Inputs whose level, not edge, is what counts: gates and power signals. On the owner
thread, a level must hold its debounce time before it is recorded; the edge's own time
decides, so a busy loop neither loses a change nor takes a bounce for one."""

from __future__ import annotations

import datetime as dt

from edge.config import Input
from edge.events import BATTERY_STATE, GATE_STATE, MAINS_STATE
from edge.input_handler import InputHandler, InputSite
from edge.owner import Timer
from edge.status_doc import InputExtra

# A UPS signal can flicker while the mains browns out.
POWER_DEBOUNCE_S = 1.0


class LevelWatch(InputHandler):
    """Debounce of one input; subclasses say what a settled change means."""

    debounce_s = 0.0

    def __init__(self, site: InputSite, inp: Input):
        super().__init__(site, inp)
        # The settled state, as last recorded (None until restored from the store), and
        # the raw level, maybe still bouncing.
        self.active: bool | None = None
        self.level: bool | None = None
        self.level_mono = 0.0
        self.level_wall: dt.datetime | None = None
        self._debounce: Timer | None = None

    def _restored(self, active: bool, mono: float, now: dt.datetime) -> None:
        """At start: the stored state; a pin level that differs from it is a change to
        record."""
        self.active = self.level = active
        current = self.site.pin_active(self.inp.name)
        if current is not None and current != self.active:
            self.edge(current, mono, now)

    def edge(self, active: bool, mono: float, wall: dt.datetime) -> None:
        if self._debounce is not None and self._debounce.deadline <= mono:
            # The level held its debounce time before this edge came: it counts, even if
            # the owner loop was too busy to run the timer in time.
            self._debounce.cancel()
            self._settle()
        if active == self.level:
            return
        self.level, self.level_mono, self.level_wall = active, mono, wall
        if self._debounce is not None:
            self._debounce.cancel()
            self._debounce = None
        if active != self.active:
            self._debounce = self.site.loop.at(mono + self.debounce_s, self._settle)

    def _settle(self) -> None:
        self._debounce = None
        if self.level != self.active:
            self.active = self.level
            self.changed()

    def changed(self) -> None:
        raise NotImplementedError


class GateWatch(LevelWatch):
    """A gate's reed switch: gate_open / gate_closed; an opening outside the allowed hours
    is an alert; one held-open alert per opening."""

    def __init__(self, site: InputSite, inp: Input):
        super().__init__(site, inp)
        self.debounce_s = inp.debounce_s
        self._held: Timer | None = None

    @property
    def open(self) -> bool:
        return bool(self.active)

    def status(self) -> InputExtra:
        return {"open": self.active}

    def restore(self, now: dt.datetime, mono: float) -> None:
        inp = self.inp
        last = self.site.last_event(inp.name, GATE_STATE)
        if last is not None and last.kind == "gate_open":
            # The wall clock is all a restart has; one that is behind the stored opening
            # must not put the alert off beyond held_open_alert_s.
            left = last.ts + inp.held_open_alert_s - now.timestamp()
            self._arm_held(mono + min(max(0.0, left), inp.held_open_alert_s))
        self._restored(last is not None and last.kind != "gate_closed", mono, now)

    def changed(self) -> None:
        d, inp, when = self.site, self.inp, self.level_wall
        assert when is not None  # a change follows an edge, which set it
        if self.open:
            d.record("gate_open", inp.name, inp.label, time=when)
            local = when.astimezone(d.tz)
            if not inp.allowed_at(local):
                d.record("gate_after_hours", inp.name, inp.label,
                         {"local_time": local.strftime("%H:%M:%S")}, time=when)
            self._arm_held(self.level_mono + inp.held_open_alert_s)
        else:
            if self._held is not None:
                self._held.cancel()
                self._held = None
            d.record("gate_closed", inp.name, inp.label, time=when)

    def _arm_held(self, deadline: float) -> None:
        if self.inp.held_open_alert_s > 0:
            self._held = self.site.loop.at(deadline, self._held_open)

    def _held_open(self) -> None:
        self._held = None
        if self.open:
            self.site.record("gate_held_open", self.inp.name, self.inp.label,
                               {"held_open_alert_s": self.inp.held_open_alert_s})


class PowerWatch(LevelWatch):
    """A UPS or power-fail signal: mains_lost → power_lost / power_restored;
    battery_low → battery_low when it starts."""

    debounce_s = POWER_DEBOUNCE_S

    def restore(self, now: dt.datetime, mono: float) -> None:
        kinds = MAINS_STATE if self.inp.signals == "mains_lost" else BATTERY_STATE
        last = self.site.last_event(self.inp.name, kinds)
        self._restored(last is not None and last.kind == kinds[0], mono, now)

    def changed(self) -> None:
        d, inp, when = self.site, self.inp, self.level_wall
        if inp.signals == "mains_lost":
            d.record("power_lost" if self.active else "power_restored", inp.name, inp.label,
                     time=when)
        elif self.active:
            d.record("battery_low", inp.name, inp.label, time=when)
