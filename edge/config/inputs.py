"""The inputs of the config ([[panic_button]], [[gate]], [[tamper]], [[ack_button]],
[[power_input]]): one Input dataclass, one table of input kinds with the keys each reads
and their defaults, and a gate's opening hours."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.config.checks import not_blank, one_of, valid_name
from edge.config.section import read_keys, setting
from edge.config.table import REQUIRED, Table

POWER_SIGNALS = ("mains_lost", "battery_low")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE_RE = re.compile(r"^([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})$")


@dataclass(frozen=True)
class TimeRange:
    """Minutes since midnight; start inclusive, end exclusive; end < start crosses midnight."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_time_range(text: str) -> TimeRange:
    """'HH:MM-HH:MM' → TimeRange; ValueError with the reason."""
    m = _RANGE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or m1 > 59:
        raise ValueError(f"{text!r}: start must be 00:00 to 23:59")
    if not (h2 <= 23 and m2 <= 59) and (h2, m2) != (24, 0):
        raise ValueError(f"{text!r}: end must be 00:00 to 24:00")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"{text!r} is empty")
    return TimeRange(start, end)


def read_open_hours(t: Table, key: str, default: None) -> tuple[TimeRange, ...] | None:
    ranges = t.get(key, list, default)
    if ranges is None:
        return None
    if not ranges:
        t.fail(key, "must not be empty (leave it out to allow any time)")
    out = []
    for text in ranges:
        if not isinstance(text, str):
            t.fail(key, f"{text!r} is not a string \"HH:MM-HH:MM\"")
            continue
        try:
            out.append(parse_time_range(text))
        except ValueError as e:
            t.fail(key, str(e))
    return tuple(out)


def read_open_days(t: Table, key: str, default: None) -> frozenset[int] | None:
    days = t.get(key, list, default)
    if days is None:
        return None
    if not days:
        t.fail(key, "must not be empty (leave it out to allow every day)")
    out = set()
    for day in days:
        if isinstance(day, str) and day.lower() in DAY_NAMES:
            out.add(DAY_NAMES.index(day.lower()))
        else:
            t.fail(key, f"{day!r} is not a day name ({', '.join(DAY_NAMES)})")
    return frozenset(out)


@dataclass(frozen=True)
class Input:
    """A panic button, gate, tamper switch, acknowledge key switch or power signal.
    ``active_low``: the active state is the low level. The defaults after it are what an
    input of a kind without that key has; the keys' defaults are in INPUT_KINDS."""

    kind: str  # "panic" | "gate" | "tamper" | "ack" | "power"
    name: str = setting(check=valid_name)
    label: str = setting(check=not_blank)  # what SMS texts and the platform show
    pin: int = setting(read=Table.pin)
    active_low: bool = setting()
    held_open_alert_s: int = 0
    debounce_s: float = 0.0
    open_hours: tuple[TimeRange, ...] | None = setting(None, read=read_open_hours)
    open_days: frozenset[int] | None = setting(None, read=read_open_days)
    signals: str | None = setting(None, check=one_of(POWER_SIGNALS))  # power inputs

    def allowed_at(self, local: dt.datetime) -> bool:
        """Whether a gate may open at this local time (open_hours / open_days). The part of
        a range after midnight belongs to the day the range started: with
        "22:00-06:00" on fri, Saturday 01:00 is allowed and Monday 01:00 is not."""
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        ranges = self.open_hours if self.open_hours is not None else (TimeRange(0, 1440),)
        for r in ranges:
            if not r.contains(minute):
                continue
            started = (day - 1) % 7 if r.start > r.end and minute < r.end else day
            if self.open_days is None or started in self.open_days:
                return True
        return False


@dataclass(frozen=True)
class InputKind:
    """A kind of input: its array of tables, the Input keys it reads beyond name, label
    and pin, each with its default (REQUIRED: it must be given), and the handler class
    that says what its edges mean ("module:Class", imported by the daemon only)."""

    kind: str
    table: str
    keys: Mapping[str, Any]
    handler: str


_NAMED = {"name": REQUIRED, "label": REQUIRED, "pin": REQUIRED}
# A gate says its level as open_when ("high" or "low"), read into active_low.
GATE_OPEN_WHEN = ("high", "low")
INPUT_KINDS = (
    InputKind("panic", "panic_button", {"active_low": True}, "edge.alarm_input:PanicButton"),
    InputKind("gate", "gate", {"held_open_alert_s": 300, "debounce_s": 0.3,
                               "open_hours": None, "open_days": None},
              "edge.watches:GateWatch"),
    # An enclosure switch is held closed (low, with the pull-up) while the lid is shut.
    InputKind("tamper", "tamper", {"active_low": False}, "edge.alarm_input:TamperSwitch"),
    InputKind("ack", "ack_button", {"active_low": True}, "edge.ack_input:AckSwitch"),
    # UPS HATs and power-fail relays pull their signal line low when they signal.
    InputKind("power", "power_input", {"active_low": True, "signals": REQUIRED},
              "edge.watches:PowerWatch"),
)


def read_input(kind: InputKind, t: Table) -> Input | None:
    """The input of table ``t``, or None when it cannot be one (the problems are noted)."""
    if not t.ok:
        return None
    values = read_keys(Input, t, _NAMED)
    if kind.kind == "gate":
        values["active_low"] = t.get("open_when", str, GATE_OPEN_WHEN[0],
                                     check=one_of(GATE_OPEN_WHEN)) == "low"
    values.update(read_keys(Input, t, kind.keys))
    t.finish()
    if any(values[key] is None for key in _NAMED):
        return None
    return Input(kind=kind.kind, **values)
