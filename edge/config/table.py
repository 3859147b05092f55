"""The collector: every problem of a config is one line naming the file, the table and the
key, all found at once; a table is read through typed getters that record a problem instead
of raising, and its numbers are held to RANGES."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from edge.safe_text import safe_text

# A check of a value that has the right TOML type: None when fine, else why not.
Check = Callable[[Any], "str | None"]

# What the installed template writes where every school's own value belongs: a daemon
# armed on it would text a stranger and report to nobody, so it is refused until edited.
PLACEHOLDER = "change-me"

# Every duration, size and count in the config with its range, both ends allowed, written
# once: Table.number checks a value against it (nan, inf, negatives and absurd values
# fail) and the README's config table shows it. A new numeric key gets its line here.
RANGES: dict[str, tuple[int | float, int | float]] = {
    "[storage] retention_days": (1, 3650),
    "[storage] max_snapshots_mb": (1, 1_048_576),
    "[storage] min_free_mb": (10, 10240),
    "[[gate]] debounce_s": (0, 10),
    "[[gate]] held_open_alert_s": (0, 86400),
    "[siren] max_on_s": (1, 3600),
    "[camera] pre_trigger_s": (0, 60),
    "[modem] health_s": (1, 3600),
    "[modem] min_signal": (0, 31),
    "[uplink] sms_fallback_after_s": (0, 3600),
    "[uplink] heartbeat_s": (1, 86400),
    "[uplink] connect_timeout_s": (0.1, 60),
    "[uplink] read_timeout_s": (0.1, 300),
    "[sia] port": (1, 65535),
    "[sia] supervision_s": (0, 86400),
    "[sms] max_parts": (1, 10),
    "[sms] help_reply_every_s": (60, 86400),
    "[sms] replies_per_hour": (1, 60),
    "[drill] siren_s": (0, 300),
    "[drill] default_for_s": (60, 86400),
    "[escalation] call_after_s": (0, 3600),
    "[escalation] ring_s": (5, 120),
    "[escalation] rounds": (1, 10),
    "[walktest] due_days": (1, 365),
}
# What a numeric key's name ends with → the unit an error message names.
_UNITS = {"_s": " seconds", "_days": " days", "_mb": " MB"}
_BCM_PINS = range(0, 28)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


# The default of a key that must be given.
REQUIRED: Final = _Required()


class Problems:
    """Every problem found in one config file, one line each; and which table owns which
    BCM pin, so that a second use names the first."""

    def __init__(self, file: str):
        self.file = file
        self.lines: list[str] = []
        self.pin_owners: dict[int, str] = {}

    def add(self, where: str, why: str) -> None:
        # A key or value may hold a line break or an escape sequence: one problem, one line.
        self.lines.append(safe_text(f"config error: {self.file}: {where}: {why}"))


class Table:
    """One TOML table being read: typed getters that record problems instead of raising."""

    def __init__(self, problems: Problems, title: str, raw: object, array: bool = False):
        self.problems = problems
        self.title = title
        self.array = array
        self.seen: set[str] = set()
        self.ok = isinstance(raw, dict)
        self.raw: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if not self.ok:
            problems.add(title, f"must be a table, not {type_name(raw)}")
        self.label = title  # "[[gate]] main_gate" once the name is known

    def where(self, key: str) -> str:
        return f"{self.label}.{key}" if self.array else f"{self.label} {key}"

    def fail(self, key: str, why: str) -> None:
        self.problems.add(self.where(key), why)

    def get(self, key: str, types: type | tuple[type, ...], default: Any = REQUIRED,
            check: Check | None = None, *, secret: bool = False) -> Any:
        """The value of ``key``, ``default`` when it is absent, None when it is wrong;
        ``secret``: a value never echoed in an error (a PIN)."""
        self.seen.add(key)
        if key not in self.raw:
            if default is REQUIRED:
                self.fail(key, "missing (required)")
                return None
            return default
        value = self.raw[key]
        if not _is_type(value, types):
            shown = "" if secret else f" {value!r}"
            self.fail(key, f"must be {_types_text(types)}, not {type_name(value)}{shown}")
            return None
        if isinstance(value, str) and PLACEHOLDER in value.lower():
            self.fail(key, f"{value!r} is the template's placeholder: edit it")
            return None
        if check is not None:  # before float(): an integer of 400 digits overflows a float
            why = check(value)
            if why:
                self.fail(key, why)
                return None
        if isinstance(value, int) and not isinstance(value, bool) and float in _as_tuple(types):
            value = float(value)
        return value

    def number(self, key: str, types: type | tuple[type, ...], default: Any) -> Any:
        """A number within its RANGES entry for this table (written there once)."""
        low, high = RANGES[f"{self.title} {key}"]
        unit = next((u for end, u in _UNITS.items() if key.endswith(end)), "")
        return self.get(key, types, default, check=lambda value: None if low <= value <= high
                        else f"must be from {low} to {high}{unit}")

    def pin(self, key: str, default: Any = REQUIRED) -> Any:
        """A BCM pin, claimed for this table (a Reader: ``setting(read=Table.pin)``)."""
        pin = self.get(key, int, default, check=lambda value: None if value in _BCM_PINS
                       else "must be a BCM GPIO number from 0 to 27")
        owners = self.problems.pin_owners
        if pin in owners:
            self.fail(key, f"pin {pin} is already used by {owners[pin]}")
        elif pin is not None:
            owners[pin] = self.label
        return pin

    def has_range(self, key: str) -> bool:
        return f"{self.title} {key}" in RANGES

    def finish(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                self.fail(key, "unknown key")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _is_type(value: object, types: type | tuple[type, ...]) -> bool:
    for t in _as_tuple(types):
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t in (str, bool, list, dict) and isinstance(value, t):
            return True
    return False


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "an array", dict: "a table"}


def _types_text(types: type | tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES[t] for t in _as_tuple(types))


# What a value that was given is called; bool first, as True is also an int.
_VALUE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
                list: "array", dict: "table"}


def type_name(value: object) -> str:
    for t, name in _VALUE_NAMES.items():
        if isinstance(value, t):
            return name
    return type(value).__name__
