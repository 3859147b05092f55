"""Inputs whose level, not edge, is what counts: gates and power signals. On the owner
thread, a level must hold its debounce time before it is recorded; the edge's own time
decides, so a busy loop neither loses a change nor takes a bounce for one."""

from __future__ import annotations

import datetime as dt

from edge.config import Input
from edge.events import BATTERY_STATE, GATE_STATE, MAINS_STATE
from edge.owner import Timer

# A UPS signal can flicker while the mains browns out.
POWER_DEBOUNCE_S = 1.0


class LevelWatch:
    """Debounce of one input; subclasses say what a settled change means."""

    debounce_s = 0.0

    def __init__(self, daemon, inp: Input, active: bool):
        self.daemon = daemon
        self.inp = inp
        self.active = active  # the settled state, as last recorded
        self.level = active  # the raw level, maybe still bouncing
        self.level_mono = 0.0
        self.level_wall: dt.datetime | None = None
        self._debounce: Timer | None = None

    def follow_pin(self, mono: float, now: dt.datetime) -> None:
        """At start: a level that differs from the stored state is a change to record."""
        current = self.daemon.pins.active(self.inp.name) if self.daemon.pins else None
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
            self._debounce = self.daemon.loop.at(mono + self.debounce_s, self._settle)

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

    def __init__(self, daemon, inp: Input, is_open: bool):
        super().__init__(daemon, inp, is_open)
        self.debounce_s = inp.debounce_s
        self._held: Timer | None = None

    @property
    def open(self) -> bool:
        return self.active

    @classmethod
    def restored(cls, daemon, inp: Input, now: dt.datetime, mono: float) -> GateWatch:
        last = daemon._last(inp.name, GATE_STATE)
        is_open = last is not None and last.kind != "gate_closed"
        watch = cls(daemon, inp, is_open)
        if is_open and last.kind == "gate_open":
            # The wall clock is all a restart has; one that is behind the stored opening
            # must not put the alert off beyond held_open_alert_s.
            left = last.ts + inp.held_open_alert_s - now.timestamp()
            watch._arm_held(mono + min(max(0.0, left), inp.held_open_alert_s))
        watch.follow_pin(mono, now)
        return watch

    def changed(self) -> None:
        d, inp, when = self.daemon, self.inp, self.level_wall
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
            self._held = self.daemon.loop.at(deadline, self._held_open)

    def _held_open(self) -> None:
        self._held = None
        if self.open:
            self.daemon.record("gate_held_open", self.inp.name, self.inp.label,
                               {"held_open_alert_s": self.inp.held_open_alert_s})


class PowerWatch(LevelWatch):
    """A UPS or power-fail signal: mains_lost → power_lost / power_restored;
    battery_low → battery_low when it starts."""

    debounce_s = POWER_DEBOUNCE_S

    @classmethod
    def restored(cls, daemon, inp: Input, now: dt.datetime, mono: float) -> PowerWatch:
        kinds = MAINS_STATE if inp.signals == "mains_lost" else BATTERY_STATE
        last = daemon._last(inp.name, kinds)
        watch = cls(daemon, inp, last is not None and last.kind == kinds[0])
        watch.follow_pin(mono, now)
        return watch

    def changed(self) -> None:
        d, inp, when = self.daemon, self.inp, self.level_wall
        if inp.signals == "mains_lost":
            d.record("power_lost" if self.active else "power_restored", inp.name, inp.label,
                     time=when)
        elif self.active:
            d.record("battery_low", inp.name, inp.label, time=when)
