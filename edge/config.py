"""The TOML configuration: parsed into frozen dataclasses, every problem found at once.

Each problem is one line naming the file, the table and the key, as installers read them:
``config error: config.toml: [[gate]] main_gate.pin: pin 17 is already used by
[[panic_button]] guard_room``. Nothing is created on disk before the whole file is accepted.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.clock import LocalTime
from edge.errors import ConfigError
from edge.events import PART_LABELS

DEFAULT_PATH = "/etc/edge-alarm/config.toml"
DEFAULT_SOCKET = "/run/edge-alarm/control.sock"

PIN_FACTORIES = ("lgpio", "rpigpio", "pigpio", "mock")
CAMERA_BACKENDS = ("picamera2", "none", "test-pattern")
POWER_SIGNALS = ("mains_lost", "battery_low")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Kinds a contact may be told of: the event kinds that are worth a message, plus the
# daily summary that contacts opt into.
RECEIVABLE_KINDS = frozenset({
    "panic", "tamper", "gate_after_hours", "gate_held_open", "gate_open", "gate_closed",
    "fault", "recovered", "silenced", "acknowledged", "drill", "sms_refused", "power_lost",
    "power_restored", "battery_low", "summary",
})
DEFAULT_IMMEDIATE = ("panic", "tamper", "gate_after_hours")
# Placeholders an [sms] template may use; see edge/sms_text.py.
TEMPLATE_FIELDS = frozenset({"site", "label", "subject", "time", "date", "kind", "reason", "by",
                             "text"})

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}$")
_CN_MOBILE_RE = re.compile(r"^1[3-9][0-9]{9}$")
_RANGE_RE = re.compile(r"^([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})$")
_BCM_PINS = range(0, 28)
# What the installed template writes where every school's own value belongs: a daemon
# armed on it would text a stranger and report to nobody, so it is refused until edited.
PLACEHOLDER = "change-me"
_PLACEHOLDER_PHONE_RE = re.compile(r"^\+?[0-9]*[Xx][0-9Xx]*$")
# Domains reserved for examples (RFC 2606, and the spec's platform.example.cn).
_EXAMPLE_HOST_RE = re.compile(r"(^|\.)example\.(cn|com|net|org)$|\.(example|invalid)$")

# Every duration, size and count in the config with its range, both ends allowed, written
# once: _Table.number checks a value against it (nan, inf, negatives and absurd values
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
    "[sms] max_parts": (1, 10),
    "[sms] help_reply_every_s": (60, 86400),
    "[sms] replies_per_hour": (1, 60),
    "[drill] siren_s": (0, 300),
    "[drill] default_for_s": (60, 86400),
}
# What a numeric key's name ends with → the unit an error message names.
_UNITS = {"_s": " seconds", "_days": " days", "_mb": " MB"}


def default_config_path() -> str:
    return os.environ.get("EDGE_ALARM_CONFIG") or DEFAULT_PATH


@dataclass(frozen=True)
class TimeRange:
    """Minutes since midnight; start inclusive, end exclusive; end < start crosses midnight."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True)
class Site:
    name: str
    device_id: str
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# Low free space clears only once min_free_mb and this share of it again are free.
LOW_SPACE_CLEAR_SHARE = 0.1


@dataclass(frozen=True)
class Storage:
    path: Path
    retention_days: int = 90
    max_snapshots_mb: int = 2048
    min_free_mb: int = 50

    @property
    def db_path(self) -> Path:
        return self.path / "events.db"

    @property
    def snapshots_path(self) -> Path:
        return self.path / "snapshots"

    def space_low(self, free_bytes: int, was_low: bool = False) -> bool:
        """Less than min_free_mb free; once low, until LOW_SPACE_CLEAR_SHARE more is free
        again, so a card hovering at the threshold is one fault, not one per minute."""
        need = self.min_free_mb * (1 + LOW_SPACE_CLEAR_SHARE if was_low else 1)
        return free_bytes < need * 1024 * 1024


@dataclass(frozen=True)
class Gpio:
    pin_factory: str


@dataclass(frozen=True)
class Input:
    """A panic button, gate, tamper switch, acknowledge key switch or power signal.
    ``active_low``: the active state is the low level."""

    kind: str  # "panic" | "gate" | "tamper" | "ack" | "power"
    name: str
    label: str
    pin: int
    active_low: bool
    debounce_s: float = 0.0
    held_open_alert_s: int = 0
    open_hours: tuple[TimeRange, ...] | None = None
    open_days: frozenset[int] | None = None
    signals: str | None = None  # power inputs: "mains_lost" or "battery_low"

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
class Siren:
    pin: int
    active_high: bool = True
    max_on_s: int = 180


@dataclass(frozen=True)
class Camera:
    backend: str
    pre_trigger_s: int = 5
    snapshot_on_gate_open: bool = False


@dataclass(frozen=True)
class Modem:
    port: str
    baudrate: int = 115200
    sim_pin: str = ""
    smsc: str = ""
    health_s: int = 60
    min_signal: int = 5


@dataclass(frozen=True)
class Uplink:
    url: str
    token_file: Path
    sms_fallback_after_s: int = 20
    heartbeat_s: int = 300
    ca_file: Path | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0


@dataclass(frozen=True)
class Contact:
    name: str
    phone: str
    receives: frozenset[str]
    may_command: bool = False


@dataclass(frozen=True)
class Sms:
    immediate: frozenset[str] = frozenset(DEFAULT_IMMEDIATE)
    templates: dict[str, str] = field(default_factory=dict)
    max_parts: int = 4
    command_pin: str | None = None  # a command counts only as "PIN WORD"; never shown
    help_reply_every_s: int = 600  # a help reply at most this often per sender
    replies_per_hour: int = 10  # replies to one sender; beyond, commands are not answered


@dataclass(frozen=True)
class Drill:
    siren_s: int = 5  # a drill sounds the siren briefly: the school hears it, nobody panics
    default_for_s: int = 1800


@dataclass(frozen=True)
class Control:
    socket: Path = Path(DEFAULT_SOCKET)


@dataclass(frozen=True)
class Config:
    path: str
    site: Site
    storage: Storage
    gpio: Gpio
    inputs: tuple[Input, ...]
    siren: Siren | None = None
    camera: Camera | None = None
    modem: Modem | None = None
    uplink: Uplink | None = None
    contacts: tuple[Contact, ...] = ()
    sms: Sms = Sms()
    drill: Drill = Drill()
    control: Control = Control()

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    def label_of(self, part: str) -> str:
        """What people call a part: an input's label, or the name of a built-in part
        (modem, camera, uplink…) in Chinese."""
        inp = self.input(part)
        return inp.label if inp is not None else PART_LABELS.get(part, part)

    @property
    def has_transport(self) -> bool:
        """Whether any transport to a platform is configured (spec §5: "no transport")."""
        return self.uplink is not None


# --------------------------------------------------------------------------- parsing

_REQUIRED = object()


class _Problems:
    def __init__(self, file: str):
        self.file = file
        self.lines: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.lines.append(f"config error: {self.file}: {where}: {why}")


class _Table:
    """One TOML table being read: typed getters that record problems instead of raising."""

    def __init__(self, problems: _Problems, title: str, raw: object, array: bool = False):
        self.problems = problems
        self.title = title
        self.array = array
        self.seen: set[str] = set()
        self.ok = isinstance(raw, dict)
        self.raw = raw if isinstance(raw, dict) else {}
        if not self.ok:
            problems.add(title, f"must be a table, not {_type_name(raw)}")
        self.label = title  # "[[gate]] main_gate" once the name is known

    def where(self, key: str) -> str:
        return f"{self.label}.{key}" if self.array else f"{self.label} {key}"

    def fail(self, key: str, why: str) -> None:
        self.problems.add(self.where(key), why)

    def get(self, key, types, default=_REQUIRED, check=None, secret=False):
        """``secret``: a value never echoed in an error (a PIN)."""
        self.seen.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                self.fail(key, "missing (required)")
                return None
            return default
        value = self.raw[key]
        if not _is_type(value, types):
            shown = "" if secret else f" {value!r}"
            self.fail(key, f"must be {_types_text(types)}, not {_type_name(value)}{shown}")
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

    def number(self, key: str, types, default):
        """A number within its RANGES entry for this table (written there once)."""
        low, high = RANGES[f"{self.title} {key}"]
        unit = next((u for end, u in _UNITS.items() if key.endswith(end)), "")
        return self.get(key, types, default, check=lambda value: None if low <= value <= high
                        else f"must be from {low} to {high}{unit}")

    def finish(self) -> None:
        for key in self.raw:
            if key not in self.seen:
                self.fail(key, "unknown key")


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _is_type(value, types) -> bool:
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


def _types_text(types) -> str:
    return " or ".join(_TYPE_NAMES[t] for t in _as_tuple(types))


# What a value that was given is called; bool first, as True is also an int.
_VALUE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
                list: "array", dict: "table"}


def _type_name(value) -> str:
    for t, name in _VALUE_NAMES.items():
        if isinstance(value, t):
            return name
    return type(value).__name__


def _not_blank(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _one_of(choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(map(repr, choices))}"
    return check


def _matching(pattern: re.Pattern, why: str):
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else why
    return check


_valid_name = _matching(_NAME_RE, "must be 1-32 of a-z, 0-9, '_' or '-', starting with a "
                                  "letter or digit")
_http_url = _matching(re.compile(r"https?://[^/\s]+(/\S*)?"),
                      "must be an http:// or https:// URL")


def _valid_url(value: str) -> str | None:
    why = _http_url(value)
    if why is None and _EXAMPLE_HOST_RE.search(urlsplit(value).hostname or ""):
        return (f"{value!r} is the template's example platform: edit it to the county "
                "platform's URL, or remove [uplink]")
    return why
_valid_device_id = _matching(re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
                             "must be 1-64 of A-Z, a-z, 0-9, '.', '_' or '-'")
_sim_pin = _matching(re.compile(r"^([0-9]{4,8})?$"), "must be 4-8 digits")


def _command_pin(value: str | int) -> str | None:
    """A string of 4-8 digits; never echoed (an unquoted 2580 is a TOML integer)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4,8}", value):
        return None
    return 'must be 4-8 digits, written as a quoted string (leave the key out for no PIN)'



def _valid_pin(value: int) -> str | None:
    return None if value in _BCM_PINS else "must be a BCM GPIO number from 0 to 27"


def phone_problem(value: str) -> str | None:
    if _E164_RE.fullmatch(value) or _CN_MOBILE_RE.fullmatch(value):
        return None
    if _PLACEHOLDER_PHONE_RE.fullmatch(value):
        return f"{value!r} is the template's placeholder: edit it to the contact's number"
    return f"{value!r} is neither an E.164 number (+8613800138000) nor a domestic mobile number"


def _valid_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {value!r}"
    return None


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


class _Pins:
    """Which table owns which BCM pin, so a second use names the first."""

    def __init__(self):
        self.owners: dict[int, str] = {}

    def claim(self, table: _Table, key: str, pin: int | None) -> None:
        if pin is None:
            return
        if pin in self.owners:
            table.fail(key, f"pin {pin} is already used by {self.owners[pin]}")
        else:
            self.owners[pin] = table.label


def load(path: str) -> Config:
    """Read and check the config at ``path``. Raises ConfigError with every problem."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"config error: {path}: file not found"]) from None
    except PermissionError:
        raise ConfigError([f"config error: {path}: permission denied"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config error: {path}: is a directory"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"config error: {path}: not valid TOML: {e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"config error: {path}: not UTF-8: {e}"]) from None
    except ValueError as e:  # an integer of thousands of digits: TOML allows it, Python not
        raise ConfigError([f"config error: {path}: not valid TOML: {e}"]) from None
    return parse(raw, path)


def parse(raw: dict, path: str = "config.toml") -> Config:
    problems = _Problems(path)
    pins = _Pins()
    known = {"site", "storage", "gpio", "panic_button", "gate", "tamper", "ack_button",
             "power_input", "siren", "camera", "modem", "uplink", "contact", "sms", "drill",
             "control"}
    for key in raw:
        if key not in known:
            problems.add(f"[{key}]", "unknown table")

    site = _site(_section(problems, raw, "site", required=True))
    storage = _storage(_section(problems, raw, "storage", required=True))
    gpio = _gpio(_section(problems, raw, "gpio", required=True))
    inputs = []
    for kind, key in (("panic", "panic_button"), ("gate", "gate"), ("tamper", "tamper"),
                      ("ack", "ack_button"), ("power", "power_input")):
        for table in _array(problems, raw, key):
            inputs.append(_input(kind, table, pins))
    if not any(t in raw for t in ("panic_button", "gate", "tamper")):
        problems.add("[[panic_button]]", "at least one input ([[panic_button]], [[gate]] or "
                                         "[[tamper]]) is required")
    _check_unique(inputs)

    siren_t = _section(problems, raw, "siren")
    siren = _siren(siren_t, pins) if siren_t else None
    camera_t = _section(problems, raw, "camera")
    camera = _camera(camera_t) if camera_t else None
    modem_t = _section(problems, raw, "modem")
    modem = _modem(modem_t) if modem_t else None
    uplink_t = _section(problems, raw, "uplink")
    uplink = _uplink(uplink_t) if uplink_t else None
    contacts = [_contact(t) for t in _array(problems, raw, "contact")]
    _check_unique(contacts)
    sms_t = _section(problems, raw, "sms")
    sms = _sms(sms_t) if sms_t else Sms()
    drill_t = _section(problems, raw, "drill")
    drill = _drill(drill_t) if drill_t else Drill()
    control_t = _section(problems, raw, "control")
    control = _control(control_t) if control_t else Control()

    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        path=path, site=site, storage=storage, gpio=gpio,
        inputs=tuple(i[0] for i in inputs), siren=siren, camera=camera, modem=modem,
        uplink=uplink, contacts=tuple(c[0] for c in contacts), sms=sms, drill=drill,
        control=control,
    )


@overload
def _section(problems: _Problems, raw: dict, key: str, required: Literal[True]) -> _Table: ...
@overload
def _section(problems: _Problems, raw: dict, key: str, required: bool = False) -> _Table | None: ...
def _section(problems: _Problems, raw: dict, key: str, required: bool = False) -> _Table | None:
    if key not in raw:
        if required:
            problems.add(f"[{key}]", "missing (required)")
            return _Table(problems, f"[{key}]", {})
        return None
    if isinstance(raw[key], list):
        problems.add(f"[{key}]", f"must be a single [{key}] table, not [[{key}]]")
        return _Table(problems, f"[{key}]", {})
    return _Table(problems, f"[{key}]", raw[key])


def _array(problems: _Problems, raw: dict, key: str) -> list[_Table]:
    if key not in raw:
        return []
    value = raw[key]
    if not isinstance(value, list):
        problems.add(f"[[{key}]]", f"must be an array of tables [[{key}]], not [{key}]")
        return []
    tables = []
    for n, item in enumerate(value, 1):
        table = _Table(problems, f"[[{key}]]", item, array=True)
        table.label = f"[[{key}]] #{n}"
        name = table.raw.get("name")
        if isinstance(name, str) and _NAME_RE.match(name):
            table.label = f"[[{key}]] {name}"
        tables.append(table)
    return tables


def _check_unique(items) -> None:
    """Names are unique among (object, table) pairs; a repeat names the first owner."""
    seen: dict[str, str] = {}
    for item in items:
        if item is None:
            continue
        obj, table = item
        if obj.name in seen:
            table.fail("name", f"name {obj.name!r} is already used by {seen[obj.name]}")
        else:
            seen[obj.name] = table.label


def _site(t: _Table) -> Site:
    s = Site(
        name=t.get("name", str, check=_not_blank),
        device_id=t.get("device_id", str, check=_valid_device_id),
        timezone=t.get("timezone", str, "Asia/Shanghai", check=_valid_timezone),
    )
    t.finish()
    return s


def _storage(t: _Table) -> Storage:
    path = t.get("path", str, check=_absolute_path)
    s = Storage(
        path=Path(path) if path else Path("."),
        retention_days=t.number("retention_days", int, 90),
        max_snapshots_mb=t.number("max_snapshots_mb", int, 2048),
        min_free_mb=t.number("min_free_mb", int, 50),
    )
    t.finish()
    return s


def _absolute_path(value: str) -> str | None:
    return None if os.path.isabs(value) else "must be an absolute path"


def _gpio(t: _Table) -> Gpio:
    g = Gpio(pin_factory=t.get("pin_factory", str, "lgpio", check=_one_of(PIN_FACTORIES)))
    t.finish()
    return g


def _input(kind: str, t: _Table, pins: _Pins):
    if not t.ok:
        return None
    name = t.get("name", str, check=_valid_name)
    label = t.get("label", str, check=_not_blank)  # what SMS texts and the platform show
    pin = t.get("pin", int, check=_valid_pin)
    pins.claim(t, "pin", pin)
    extra = {}
    if kind in ("panic", "ack"):
        active_low = t.get("active_low", bool, True)
    elif kind == "power":
        # UPS HATs and power-fail relays pull their signal line low when they signal.
        active_low = t.get("active_low", bool, True)
        extra["signals"] = t.get("signals", str, check=_one_of(POWER_SIGNALS))
    elif kind == "tamper":
        # An enclosure switch is held closed (low, with the pull-up) while the lid is shut.
        active_low = t.get("active_low", bool, False)
    else:
        open_when = t.get("open_when", str, "high", check=_one_of(("high", "low")))
        active_low = open_when == "low"
        extra["held_open_alert_s"] = t.number("held_open_alert_s", int, 300)
        extra["debounce_s"] = t.number("debounce_s", float, 0.3)
        extra["open_hours"] = _open_hours(t)
        extra["open_days"] = _open_days(t)
    t.finish()
    if name is None or pin is None or label is None:
        return None
    return Input(kind=kind, name=name, label=label, pin=pin,
                 active_low=bool(active_low), **extra), t


def _open_hours(t: _Table):
    ranges = t.get("open_hours", list, None)
    if ranges is None:
        return None
    if not ranges:
        t.fail("open_hours", "must not be empty (leave it out to allow any time)")
    out = []
    for text in ranges:
        if not isinstance(text, str):
            t.fail("open_hours", f"{text!r} is not a string \"HH:MM-HH:MM\"")
            continue
        try:
            out.append(parse_time_range(text))
        except ValueError as e:
            t.fail("open_hours", str(e))
    return tuple(out)


def _open_days(t: _Table):
    days = t.get("open_days", list, None)
    if days is None:
        return None
    if not days:
        t.fail("open_days", "must not be empty (leave it out to allow every day)")
    out = set()
    for day in days:
        if isinstance(day, str) and day.lower() in DAY_NAMES:
            out.add(DAY_NAMES.index(day.lower()))
        else:
            t.fail("open_days", f"{day!r} is not a day name ({', '.join(DAY_NAMES)})")
    return frozenset(out)


def _siren(t: _Table, pins: _Pins) -> Siren:
    pin = t.get("pin", int, check=_valid_pin)
    pins.claim(t, "pin", pin)
    s = Siren(pin=pin, active_high=t.get("active_high", bool, True),
              max_on_s=t.number("max_on_s", int, 180))
    t.finish()
    return s


def _camera(t: _Table) -> Camera:
    c = Camera(
        backend=t.get("backend", str, "picamera2", check=_one_of(CAMERA_BACKENDS)),
        pre_trigger_s=t.number("pre_trigger_s", int, 5),
        snapshot_on_gate_open=t.get("snapshot_on_gate_open", bool, False),
    )
    t.finish()
    return c


def _modem(t: _Table) -> Modem:
    m = Modem(
        port=t.get("port", str, check=_not_blank),
        baudrate=t.get("baudrate", int, 115200, check=_one_of(
            (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600))),
        sim_pin=t.get("sim_pin", str, "", check=_sim_pin),
        smsc=t.get("smsc", str, "", check=lambda v: phone_problem(v) if v else None),
        health_s=t.number("health_s", int, 60),
        min_signal=t.number("min_signal", int, 5),
    )
    t.finish()
    return m


def _uplink(t: _Table) -> Uplink:
    token = t.get("token_file", str, "/etc/edge-alarm/token", check=_absolute_path)
    ca = t.get("ca_file", str, None, check=_absolute_path)
    u = Uplink(
        url=t.get("url", str, check=_valid_url),
        token_file=Path(token) if token else Path("/"),
        sms_fallback_after_s=t.number("sms_fallback_after_s", int, 20),
        heartbeat_s=t.number("heartbeat_s", int, 300),
        ca_file=Path(ca) if ca else None,
        connect_timeout_s=t.number("connect_timeout_s", float, 5.0),
        read_timeout_s=t.number("read_timeout_s", float, 15.0),
    )
    t.finish()
    return u


def _kinds(t: _Table, key: str, default, allowed=RECEIVABLE_KINDS):
    kinds = t.get(key, list, default)
    if kinds is None:
        return frozenset()
    out = set()
    for kind in kinds:
        if isinstance(kind, str) and kind in allowed:
            out.add(kind)
        else:
            t.fail(key, f"{kind!r} is not a kind ({', '.join(sorted(allowed))})")
    return frozenset(out)


def _contact(t: _Table):
    if not t.ok:
        return None
    name = t.get("name", str, check=_valid_name)
    c = Contact(
        name=name,
        phone=t.get("phone", str, check=phone_problem),
        receives=_kinds(t, "receives", _REQUIRED),
        may_command=t.get("may_command", bool, False),
    )
    t.finish()
    return (c, t) if name is not None else None


def _sms(t: _Table) -> Sms:
    templates = t.get("templates", dict, {})
    checked = {}
    for kind, text in (templates or {}).items():
        if kind not in RECEIVABLE_KINDS:
            t.fail(f"templates.{kind}", "not a kind")
        elif not isinstance(text, str) or not text.strip():
            t.fail(f"templates.{kind}", "must be a non-empty string")
        else:
            why = _template_problem(text)
            if why:
                t.fail(f"templates.{kind}", why)
            else:
                checked[kind] = text
    s = Sms(
        immediate=_kinds(t, "immediate", list(DEFAULT_IMMEDIATE)),
        templates=checked,
        max_parts=t.number("max_parts", int, 4),
        command_pin=t.get("command_pin", (str, int), None, check=_command_pin, secret=True),
        help_reply_every_s=t.number("help_reply_every_s", int, 600),
        replies_per_hour=t.number("replies_per_hour", int, 10),
    )
    t.finish()
    return s


def _template_problem(text: str) -> str | None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        return f"not a valid template: {e}"
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}} (use "
                f"{', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})")
    try:  # a format spec or conversion ({label:d}, {time!x}) fails only when filled in
        text.format(**{**{f: "x" for f in TEMPLATE_FIELDS},
                       "time": LocalTime.of(dt.datetime(2026, 1, 1, 7, 42, 15))})
    except (ValueError, KeyError, IndexError) as e:
        return f"not a valid template: {e}"
    return None


def _drill(t: _Table) -> Drill:
    d = Drill(siren_s=t.number("siren_s", int, 5),
              default_for_s=t.number("default_for_s", int, 1800))
    t.finish()
    return d


def _control(t: _Table) -> Control:
    sock = t.get("socket", str, DEFAULT_SOCKET, check=_absolute_path)
    c = Control(socket=Path(sock) if sock else Path(DEFAULT_SOCKET))
    t.finish()
    return c
