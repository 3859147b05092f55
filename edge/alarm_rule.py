"""Whether the siren sounds: the rule for a press of a latching alarm input (panic, tamper)
with its contact-bounce lockout and drill mode, and the latched alarms it keeps sounding.

One rule, asked twice: on gpiozero's thread it trips the relay at once (the siren must not
wait behind a commit on a slow SD card), then on the owner thread it acts on the press. Both
ask ``judge``, so the owner only undoes a trip when the state changed in between (drill mode
turned on, a press of the same input handled meanwhile)."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from typing import Mapping

from edge.clock import Clock
from edge.config import Drill
from edge.events import Event
from edge.owner import OwnerLoop
from edge.siren import Siren
from edge.status_doc import DrillStatus

log = logging.getLogger(__name__)

# A panic or tamper contact bounces for a few milliseconds; edges this close to the
# previous active edge are the same press.
PANIC_LOCKOUT_S = 0.5
MAX_DRILL_S = 86400


class Press(enum.Enum):
    BOUNCE = "bounce"  # within PANIC_LOCKOUT_S of the same input's previous active edge
    DRILL = "drill"  # a press in drill mode, of an input a drill applies to
    ALARM = "alarm"


class AlarmRule:
    """``alarm_inputs``: the inputs whose press is an alarm, each with whether drill mode
    makes its press a drill (a panic button; a tamper switch stays real). The siren is set
    once its relay is armed. Owner thread, except ``trip_at_once``."""

    def __init__(self, alarm_inputs: Mapping[str, bool], drill: Drill, clock: Clock,
                 loop: OwnerLoop, tz: dt.tzinfo):
        self._alarm_inputs = dict(alarm_inputs)
        self._drill_siren_s = drill.siren_s
        self._clock = clock
        self._loop = loop
        self._tz = tz
        self.siren: Siren | None = None
        self.latched: dict[str, Event] = {}  # input name → the alarm that latched it
        self._last_press: dict[str, float] = {}  # input name → its last active edge
        # Drill mode is on until this monotonic time: a clock step neither ends a drill
        # early nor stretches it.
        self.drill_ends: float | None = None
        self.drill_account: str | None = None  # who turned drill mode on (control socket)

    # ---------------------------------------------------------------- the rule

    def judge(self, name: str, mono: float) -> Press | None:
        """What an active edge of input ``name`` at ``mono`` is; None: not an alarm input.
        Reads only, so gpiozero's thread may ask too."""
        drills = self._alarm_inputs.get(name)
        if drills is None:
            return None
        last = self._last_press.get(name)
        if last is not None and mono - last < PANIC_LOCKOUT_S:
            return Press.BOUNCE
        return Press.DRILL if drills and self.in_drill() else Press.ALARM

    def _siren_s(self, press: Press | None) -> float | None:
        """How long a press sounds the siren: None for max_on_s, 0 for not at all."""
        if press is Press.ALARM:
            return None
        # A drill sounds briefly so the school hears it ([drill] siren_s, 0: silent).
        return self._drill_siren_s if press is Press.DRILL else 0

    def trip_at_once(self, name: str, mono: float) -> None:
        """gpiozero's thread, on an active edge: switch the relay on if the press sounds."""
        if self.siren is not None and self._siren_s(self.judge(name, mono)) != 0:
            self.siren.trip()

    def press(self, name: str, mono: float) -> Press | None:
        """The owner thread acts on an active edge: the siren first, before the caller
        stores anything; then a relay tripped at once that the press does not want is
        switched off again."""
        press = self.judge(name, mono)
        self._last_press[name] = mono  # bounce too: the lockout runs from the latest edge
        for_s = self._siren_s(press)
        if for_s != 0:
            self.sound(mono, for_s)
        if self.siren is not None and self.siren.off_at is None:
            self.siren.stop()
        return press

    # ---------------------------------------------------------------- the siren

    def sound(self, mono: float, for_s: float | None = None) -> None:
        if self.siren is None:
            return
        self.siren.sound(mono, for_s)
        if self.siren.off_at is not None:  # (it is, once sounding)
            self._loop.at(self.siren.off_at, self._expire)

    def resume(self, alarm: Event, now: dt.datetime, mono: float) -> None:
        """At start, for an alarm still latched: sound for what is left of max_on_s."""
        if self.siren is not None:
            left = alarm.ts + self.siren.max_on_s - now.timestamp()
            if left > 0:
                self.sound(mono, left)

    def _expire(self) -> None:
        if self.siren is not None:
            self.siren.expire(self._clock.monotonic())

    def stop_if_none_latched(self) -> None:
        if self.siren is not None and not self.latched:
            self.siren.stop()

    # ---------------------------------------------------------------- drill mode

    def in_drill(self) -> bool:
        ends = self.drill_ends  # read once: the owner may end the drill meanwhile
        return ends is not None and self._clock.monotonic() < ends

    def set_drill(self, for_s: float | None, account: str | None) -> None:
        """Drill mode on for ``for_s`` seconds, or off (None)."""
        self.drill_ends = None if for_s is None else self._clock.monotonic() + for_s
        self.drill_account = None if for_s is None else account

    def restore_drill(self, until: float, account: str | None, now: dt.datetime,
                      mono: float) -> None:
        """At start: drill mode stored until wall time ``until``. Never longer than a day:
        a clock stepped back must not leave real presses recorded as drills for days."""
        left = until - now.timestamp()
        self.drill_ends = mono + left if 0 < left <= MAX_DRILL_S else None
        self.drill_account = account

    def drill_status(self) -> DrillStatus:
        active = self.in_drill()
        until = None
        if active and self.drill_ends is not None:  # (not None whenever active)
            # said in the wall clock's terms of now, whatever it did since
            left = dt.timedelta(seconds=self.drill_ends - self._clock.monotonic())
            until = (self._clock.now() + left).astimezone(self._tz).isoformat(
                timespec="seconds")
        return {"active": active, "until": until}
