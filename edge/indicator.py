"""The guard's lamp ([indicator]): tells the guard room whether an alarm got through. Off
when idle; blinking (1 Hz) while an alarm is raised and not yet delivered anywhere; steady
once the platform has accepted each latched alarm or the network has taken its SMS
(+CMGS); fast blinking (4 Hz) while a part is in fault and no alarm is active. The state is
decided by ``lamp_state`` alone (the daemon feeds it); the blinking runs on the owner
loop's timers, so a FakeClock drives it in tests."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from edge.config import Indicator
from edge.owner import OwnerLoop, Timer

BLINK_HALF_S = 0.5  # 1 Hz: on half a second, off half a second
FAST_BLINK_HALF_S = 0.125  # 4 Hz


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
