"""The guard's lamp ([indicator]): tells the guard room whether an alarm got through. Off
when idle; blinking (1 Hz) while an alarm is raised and not yet delivered anywhere; steady
once the platform has accepted each latched alarm or the network has taken its SMS
(+CMGS); fast blinking (4 Hz) while a part is in fault and no alarm is active. The state is
decided by ``lamp_state`` alone (GuardLamp feeds it what the daemon knows); the blinking
runs on the owner loop's timers, so a FakeClock drives it in tests."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable

from edge.config import Indicator
from edge.errors import StorageError
from edge.events import Event
from edge.owner import OwnerLoop, Timer
from edge.store import Store

BLINK_HALF_S = 0.5  # 1 Hz: on half a second, off half a second
FAST_BLINK_HALF_S = 0.125  # 4 Hz
# While an alarm is not yet delivered anywhere, how often the lamp looks in the store
# whether a worker has delivered it (it goes steady then).
LAMP_CHECK_S = 1.0


class LampState(enum.StrEnum):
    OFF = "off"
    BLINKING = "blinking"  # an alarm not yet delivered anywhere
    STEADY = "steady"  # every latched alarm delivered (platform, or an SMS sent)
    FAULT = "fault"  # a part in fault, no alarm active


def lamp_state(alarms_delivered: Iterable[bool], in_fault: bool) -> LampState:
    """``alarms_delivered``: for each latched alarm, whether it got through. An active
    alarm's state outranks a fault."""
    delivered = list(alarms_delivered)
    if delivered:
        return LampState.STEADY if all(delivered) else LampState.BLINKING
    return LampState.FAULT if in_fault else LampState.OFF


class Lamp:
    """The lamp's output pin, claimed like the siren's. Owner thread."""

    def __init__(self, cfg: Indicator, pin_factory, loop: OwnerLoop):
        from gpiozero import DigitalOutputDevice

        self._output = DigitalOutputDevice(cfg.pin, active_high=cfg.active_high,
                                           initial_value=False, pin_factory=pin_factory)
        self._loop = loop
        self.state = LampState.OFF
        self._toggle: Timer | None = None

    def show(self, state: LampState) -> None:
        if state is self.state:
            return
        self.state = state
        if self._toggle is not None:
            self._toggle.cancel()
            self._toggle = None
        if state is LampState.OFF:
            self._output.off()
            return
        self._output.on()  # steady, or the first half of a blink
        if state is not LampState.STEADY:
            self._arm_toggle()

    def _arm_toggle(self) -> None:
        half = FAST_BLINK_HALF_S if self.state is LampState.FAULT else BLINK_HALF_S
        self._toggle = self._loop.after(half, self._flip)

    def _flip(self) -> None:
        self._output.toggle()
        self._arm_toggle()

    def close(self) -> None:
        if self._toggle is not None:
            self._toggle.cancel()
        self._output.off()
        self._output.close()


class GuardLamp:
    """What the guard's lamp shows, decided from the latched alarms (``alarms``), whether
    each got through, and whether a part is in fault (``in_fault``); shown on the Lamp once
    its pin is claimed. The workers record deliveries in the store (``store``), or while it
    fails in memory (``sent_from_memory(event_id)``: the contacts its SMS went to), so
    while an alarm is not yet delivered the lamp looks again every LAMP_CHECK_S. Owner
    thread."""

    def __init__(self, loop: OwnerLoop, *, alarms: Callable[[], Iterable[Event]],
                 in_fault: Callable[[], bool], store: Callable[[], Store | None],
                 sent_from_memory: Callable[[str], Collection[str]]):
        self._loop = loop
        self._alarms = alarms
        self._in_fault = in_fault
        self._store = store
        self._sent_from_memory = sent_from_memory
        self.state = LampState.OFF
        self._lamp: Lamp | None = None
        self._check: Timer | None = None

    def claim(self, cfg: Indicator, pin_factory) -> None:
        """Claim the lamp's pin; raises as gpiozero does when it is busy or missing."""
        self._lamp = Lamp(cfg, pin_factory, self._loop)

    def update(self) -> None:
        """Decide the state again: after anything that may change it (an alarm, a silence,
        a fault, a recovery)."""
        self.state = lamp_state(map(self._delivered, self._alarms()), self._in_fault())
        if self._lamp is not None:
            self._lamp.show(self.state)
        if self.state is LampState.BLINKING and self._check is None:
            self._check = self._loop.after(LAMP_CHECK_S, self._recheck)

    def _recheck(self) -> None:
        self._check = None
        self.update()

    def _delivered(self, alarm: Event) -> bool:
        """Whether the platform accepted ``alarm`` or the network took one of its SMS."""
        if self._sent_from_memory(alarm.id):
            return True
        store = self._store()
        if alarm.seq == 0 or store is None:  # (held in memory: not uploaded yet)
            return False
        try:
            return store.delivered_anywhere(alarm.seq)
        except StorageError:
            return False

    def close(self) -> None:
        if self._lamp is not None:
            self._lamp.close()
