"""Input pins: panic buttons, gate reed switches, tamper switches, over gpiozero.

All inputs are wired with the Pi's internal pull-up, so a contact to ground reads low. This
module only turns pin edges into ``on_edge(name, active, monotonic, wall)`` calls; what an
edge means (debounce, alarms) is decided on the daemon's owner thread. The callback runs on
gpiozero's thread and must do nothing but hand the edge over.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import shutil
import tempfile
from typing import Callable

from edge.clock import Clock
from edge.config import Input
from edge.errors import CommandRefused, EdgeAlarmError

log = logging.getLogger(__name__)

SIM_REFUSED = ("inputs are real pins here ([gpio] pin_factory is not \"mock\"); sim only "
               "drives a simulated daemon")
EdgeCallback = Callable[[str, bool, float, dt.datetime], None]


class PinFactoryError(EdgeAlarmError, RuntimeError):
    """The configured GPIO library could not be loaded (not on a Pi, missing package)."""


def make_pin_factory(name: str):
    """The gpiozero pin factory for ``[gpio] pin_factory``, imported late: lgpio and
    friends exist only on a Pi."""
    try:
        if name == "mock":
            from gpiozero.pins.mock import MockFactory
            return MockFactory()
        if name == "lgpio":
            _give_lgpio_a_work_dir()
            from gpiozero.pins.lgpio import LGPIOFactory
            return LGPIOFactory()
        if name == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory
            return RPiGPIOFactory()
        if name == "pigpio":
            from gpiozero.pins.pigpio import PiGPIOFactory
            return PiGPIOFactory()
    except Exception as e:  # each library fails in its own way off a Pi
        raise PinFactoryError(f"GPIO library {name!r} is not usable here: {e}") from e
    raise PinFactoryError(f"unknown pin factory {name!r}")


def _give_lgpio_a_work_dir() -> None:
    """lgpio makes its notification pipes in the current directory unless LG_WD names
    another: `check` run by the service user from a directory it cannot write (a home
    directory, /) would otherwise find no usable GPIO (gpiozero issue #1106). A private
    directory of our own, removed at exit; an LG_WD set by the caller is kept."""
    if "LG_WD" in os.environ:
        return
    work_dir = tempfile.mkdtemp(prefix="edge-alarm-lgpio-")
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    os.environ["LG_WD"] = work_dir


class InputPins:
    """The armed input pins. ``on_edge`` gets (name, active, monotonic, wall time)."""

    def __init__(self, inputs: tuple[Input, ...], pin_factory, on_edge: EdgeCallback,
                 clock: Clock, simulated: bool):
        from gpiozero import DigitalInputDevice

        self._inputs = {i.name: i for i in inputs}
        self._factory = pin_factory
        self._on_edge = on_edge
        self._clock = clock
        self.simulated = simulated
        self._devices = {}
        self.failed: dict[str, str] = {}
        for inp in inputs:
            try:
                device = DigitalInputDevice(inp.pin, pull_up=True, pin_factory=pin_factory)
            except Exception as e:  # a pin in use by another process, a missing chip…
                log.error("input %s (pin %d) cannot be armed: %s", inp.name, inp.pin, e)
                self.failed[inp.name] = str(e)
                continue
            if simulated:
                # A simulated gate starts closed and a simulated button released, whatever
                # the pull-up would make of an unwired mock pin.
                self._drive(inp, active=False)
            device.when_activated = self._handler(inp, level_low=True)
            device.when_deactivated = self._handler(inp, level_low=False)
            self._devices[inp.name] = device

    def _handler(self, inp: Input, level_low: bool):
        active = level_low == inp.active_low
        name = inp.name

        def on_change():
            self._on_edge(name, active, self._clock.monotonic(), self._clock.now())
        return on_change

    def active(self, name: str) -> bool | None:
        """The input's current state (None when its pin could not be armed)."""
        device = self._devices.get(name)
        if device is None:
            return None
        level_low = bool(device.is_active)  # with a pull-up, gpiozero's "active" is low
        return level_low == self._inputs[name].active_low

    def simulate(self, name: str, active: bool) -> None:
        """Drive a simulated input (MockFactory only), as a person pressing or opening it."""
        if not self.simulated:
            raise CommandRefused(SIM_REFUSED)
        inp = self._inputs.get(name)
        if inp is None:
            raise CommandRefused(f"no input named {name!r} (inputs: "
                                 f"{', '.join(sorted(self._inputs))})")
        self._drive(inp, active)

    def _drive(self, inp: Input, active: bool) -> None:
        pin = self._factory.pin(inp.pin)
        if active == inp.active_low:
            pin.drive_low()
        else:
            pin.drive_high()

    def close(self) -> None:
        for device in self._devices.values():
            device.close()
        self._devices.clear()
