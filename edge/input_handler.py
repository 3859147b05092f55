"""What an input's edges mean: one handler object per configured input, its class chosen
by the input's kind (edge.input_kinds.HANDLERS). Handlers run on the owner thread and
reach the daemon only through the narrow InputSite."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Protocol

from edge.alarm_rule import AlarmRule
from edge.config import Input
from edge.events import Event
from edge.owner import OwnerLoop
from edge.status_doc import InputExtra


class InputSite(Protocol):
    """What a handler may use of the daemon."""

    @property
    def loop(self) -> OwnerLoop: ...
    @property
    def rule(self) -> AlarmRule: ...
    @property
    def tz(self) -> dt.tzinfo: ...

    def record(self, kind: str, subject: str, label: str, extra: dict | None = None,
               time: dt.datetime | None = None) -> Event: ...
    def last_event(self, subject: str, kinds: tuple[str, ...]) -> Event | None: ...
    def pin_active(self, name: str) -> bool | None: ...
    def tested(self, name: str, wall: dt.datetime) -> Event: ...
    def silence(self, by: str, via: str, sent_at: float | None = None,
                account: str | None = None) -> list[Event]: ...


class InputHandler:
    """One input. A new kind of input is a subclass in a module of its own plus its entry
    in the config's INPUT_KINDS."""

    # Its press is an alarm: the AlarmRule judges it, and trips the siren from gpiozero's
    # thread; ``drill_applies``: drill mode turns its press into a drill.
    trips_siren: ClassVar[bool] = False
    drill_applies: ClassVar[bool] = False

    def __init__(self, site: InputSite, inp: Input):
        self.site = site
        self.inp = inp

    def restore(self, now: dt.datetime, mono: float) -> None:
        """At start: take up the state the stored events and the pin say (StorageError
        when the store cannot be read)."""

    def edge(self, active: bool, mono: float, wall: dt.datetime) -> None:
        raise NotImplementedError

    def status(self) -> InputExtra:
        """What the input's entry in the status adds to kind, label and active."""
        return {}
