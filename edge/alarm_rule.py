"""Whether the siren sounds: the rule for a press of a latching alarm input (panic, tamper)
with its contact-bounce lockout, drill mode and walk test, and the latched alarms it keeps sounding.

One rule, asked twice: on gpiozero's thread it trips the relay at once (the siren must not
wait behind a commit on a slow SD card), then on the owner thread it acts on the press. Both
ask ``judge``, so the owner only undoes a trip when the state changed in between (drill mode
turned on, a press of the same input handled meanwhile)."""

from __future__ import annotations

import datetime as dt
import enum
import logging
from typing import Mapping

from edge.clock import Clock, ClockSteps
from edge.config import Drill
from edge.events import Event
from edge.owner import OwnerLoop
from edge.siren import Siren
from edge.status_doc import DrillStatus, WalktestStatus
from edge.timed_mode import TimedMode

log = logging.getLogger(__name__)

# A panic or tamper contact bounces for a few milliseconds; edges this close to the
# previous active edge are the same press.
PANIC_LOCKOUT_S = 0.5
# A walk-tested input's confirmation: a chirp of the siren, not an alarm.
CHIRP_S = 0.3


class Press(enum.Enum):
    BOUNCE = "bounce"  # within PANIC_LOCKOUT_S of the same input's previous active edge
    DRILL = "drill"  # a press in drill mode, of an input a drill applies to
    TEST = "test"  # a press during a walk test: no alarm, a chirp
    ALARM = "alarm"


class AlarmRule:
    """``alarm_inputs``: the inputs whose press is an alarm, each with whether drill mode
    makes its press a drill (a panic button; a tamper switch stays real). The siren is set
    once its relay is armed. Owner thread, except ``trip_at_once``."""

    def __init__(self, alarm_inputs: Mapping[str, bool], drill: Drill, clock: Clock,
                 clock_steps: ClockSteps, loop: OwnerLoop, tz: dt.tzinfo):
        self._alarm_inputs = dict(alarm_inputs)
        self._drill_siren_s = drill.siren_s
        self._clock = clock
        self._loop = loop
        self.siren: Siren | None = None
        self.latched: dict[str, Event] = {}  # input name → the alarm that latched it
        self._last_press: dict[str, float] = {}  # input name → its last active edge
        self.drill = TimedMode("drill", clock, clock_steps, tz)
        # While on, a press of any input is a test of it: recorded, confirmed by a chirp.
        self.walktest = TimedMode("walktest", clock, clock_steps, tz)

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
        if self.walktest.active():
            return Press.TEST
        return Press.DRILL if drills and self.in_drill() else Press.ALARM

    def _siren_s(self, press: Press | None) -> float | None:
        """How long a press sounds the siren: None for max_on_s, 0 for not at all."""
        if press is Press.ALARM:
            return None
        if press is Press.TEST:
            return CHIRP_S
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

    def tested(self, name: str, mono: float) -> bool:
        """An active edge, during a walk test, of an input whose press is no alarm (a
        gate, a power signal): chirps, and True once per press (the same lockout)."""
        last = self._last_press.get(name)
        self._last_press[name] = mono
        if last is not None and mono - last < PANIC_LOCKOUT_S:
            return False
        self.sound(mono, CHIRP_S)
        return True

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
        return self.drill.active()

    @property
    def drill_account(self) -> str | None:
        return self.drill.account

    def set_drill(self, for_s: float | None, account: str | None) -> None:
        """Drill mode on for ``for_s`` seconds, or off (None)."""
        self.drill.set(for_s, account)

    def drill_status(self) -> DrillStatus:
        return {"active": self.drill.active(), "until": self.drill.until()}

    def walktest_status(self) -> WalktestStatus:
        return {"active": self.walktest.active(), "until": self.walktest.until(),
                "by": self.walktest.by if self.walktest.active() else None}
