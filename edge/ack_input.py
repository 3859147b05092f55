"""The guard's acknowledge key switch: turning it silences the siren and acknowledges every
latched alarm, like `edge-alarm silence`."""

from __future__ import annotations

import datetime as dt

from edge.input_handler import InputHandler


class AckSwitch(InputHandler):
    def edge(self, active: bool, mono: float, wall: dt.datetime) -> None:
        if active:
            self.site.silence(self.inp.name, "button")
