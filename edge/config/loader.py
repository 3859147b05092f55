"""The whole config: the file read, every table read by its section, every problem
reported at once (ConfigError, one line each), cross-table checks (pins, names)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from edge.config.checks import NAME_RE
from edge.config.inputs import INPUT_KINDS, Input, read_input
from edge.config.section import Section, key_default, not_none
from edge.config.sections import (DEFAULT_HEARTBEAT_S, DEFAULT_SMS_FALLBACK_AFTER_S, Camera,
                                  Contact, Control, Drill, Escalation, Gpio, Indicator, Modem,
                                  Mqtt, Sia, Siren, Site, Sms, Storage, Summary, Uplink,
                                  Walktest, Web)
from edge.config.table import REQUIRED, Problems, Table
from edge.errors import ConfigError
from edge.events import PART_LABELS

DEFAULT_PATH = "/etc/edge-alarm/config.toml"

S = TypeVar("S", bound=Section)


def default_config_path() -> str:
    return os.environ.get("EDGE_ALARM_CONFIG") or DEFAULT_PATH


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
    mqtt: Mqtt | None = None
    sia: Sia | None = None
    contacts: tuple[Contact, ...] = ()
    sms: Sms = Sms()
    drill: Drill = Drill()
    summary: Summary | None = None
    walktest: Walktest = Walktest()
    indicator: Indicator | None = None
    control: Control = Control()
    escalation: Escalation | None = None
    web: Web = Web()

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    def label_of(self, part: str) -> str:
        """What people call a part: an input's label, or the name of a built-in part
        (modem, camera, uplink…) in Chinese."""
        inp = self.input(part)
        return inp.label if inp is not None else PART_LABELS.get(part, part)

    @property
    def transports(self) -> tuple[str, ...]:
        """The configured transports, by the name their delivery rows and status entries
        carry. An event is owed to each of them; spec §5's "no transport" is none."""
        sections = {"uplink": self.uplink, "mqtt": self.mqtt, "sia": self.sia}
        return tuple(name for name, section in sections.items() if section is not None)

    @property
    def has_transport(self) -> bool:
        return bool(self.transports)

    @property
    def sms_fallback_after_s(self) -> int:
        """How long an event may wait for a transport before its contacts get the SMS."""
        return self.uplink.sms_fallback_after_s if self.uplink else DEFAULT_SMS_FALLBACK_AFTER_S

    @property
    def heartbeat_s(self) -> int:
        """The interval of heartbeat events, by which every transport's receiver judges
        the device alive."""
        return self.uplink.heartbeat_s if self.uplink else DEFAULT_HEARTBEAT_S

    def escalation_contacts(self) -> tuple[Contact, ...]:
        """Whom an escalation rings, in order: [escalation] contacts, or by default the
        contacts that receive `panic`."""
        if self.escalation is None:
            return ()
        if self.escalation.contacts is None:
            return tuple(c for c in self.contacts if "panic" in c.receives)
        by_name = {c.name: c for c in self.contacts}
        return tuple(by_name[name] for name in self.escalation.contacts)


def _sections() -> dict[str, tuple[type[Section], Any]]:
    """Config's fields that are a section, each read from the table of its name: its class
    and its default when the table is left out (None: that part is off; REQUIRED)."""
    hints = get_type_hints(Config)
    out = {}
    for f in dataclasses.fields(Config):
        cls = not_none(hints[f.name])
        if isinstance(cls, type) and issubclass(cls, Section):
            out[f.name] = (cls, key_default(f))
    return out


SECTIONS = _sections()
ARRAYS = ("contact", *(kind.table for kind in INPUT_KINDS))


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


def parse(raw: dict[str, Any], path: str = "config.toml") -> Config:
    problems = Problems(path)
    for key in raw:
        if key not in SECTIONS and key not in ARRAYS:
            problems.add(f"[{key}]", "unknown table")
    # In Config's order, which is the order of the problems (and the inputs' pins are
    # claimed before the siren's).
    values = {f.name: _read_field(problems, raw, f.name)
              for f in dataclasses.fields(Config) if f.name != "path"}
    _check_escalation_contacts(problems, values)
    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(path=path, **values)


def _check_escalation_contacts(problems: Problems, values: dict[str, Any]) -> None:
    escalation = values.get("escalation")
    if escalation is None or escalation.contacts is None:
        return
    known = {c.name for c in values["contacts"]}
    for name in escalation.contacts:
        if name not in known:
            problems.add("[escalation] contacts", f"{name!r} is not a [[contact]] name")


def _read_field(problems: Problems, raw: dict[str, Any], name: str) -> Any:
    if name == "inputs":
        return _inputs(problems, raw)
    if name == "contacts":
        return _contacts(problems, raw)
    cls, default = SECTIONS[name]
    return _read_section(problems, raw, name, cls, default)


def _read_section(problems: Problems, raw: dict[str, Any], key: str, cls: type[S],
                  default: Any) -> S | None:
    """The section of table ``key``; when the table is left out, its Config default (None:
    that part is off; a section: its own defaults), or a problem when it is required."""
    table = raw.get(key, {})
    if key not in raw:
        if default is not REQUIRED:
            return default
        problems.add(f"[{key}]", "missing (required)")
    elif isinstance(table, list):
        problems.add(f"[{key}]", f"must be a single [{key}] table, not [[{key}]]")
        table = {}
    return cls.read(Table(problems, f"[{key}]", table))


def _inputs(problems: Problems, raw: dict[str, Any]) -> tuple[Input, ...]:
    inputs = [(read_input(kind, table), table)
              for kind in INPUT_KINDS for table in _array(problems, raw, kind.table)]
    if not any(t in raw for t in ("panic_button", "gate", "tamper")):
        problems.add("[[panic_button]]", "at least one input ([[panic_button]], [[gate]] or "
                                         "[[tamper]]) is required")
    return _unique(inputs)


def _contacts(problems: Problems, raw: dict[str, Any]) -> tuple[Contact, ...]:
    return _unique([(Contact.read(t) if t.ok else None, t)
                    for t in _array(problems, raw, "contact")])


def _array(problems: Problems, raw: dict[str, Any], key: str) -> list[Table]:
    if key not in raw:
        return []
    value = raw[key]
    if not isinstance(value, list):
        problems.add(f"[[{key}]]", f"must be an array of tables [[{key}]], not [{key}]")
        return []
    tables = []
    for n, item in enumerate(value, 1):
        table = Table(problems, f"[[{key}]]", item, array=True)
        table.label = f"[[{key}]] #{n}"
        name = table.raw.get("name")
        if isinstance(name, str) and NAME_RE.match(name):
            table.label = f"[[{key}]] {name}"
        tables.append(table)
    return tables


N = TypeVar("N", Input, Contact)


def _unique(items: list[tuple[N | None, Table]]) -> tuple[N, ...]:
    """The items read; names are unique among them, a repeat names the first owner."""
    seen: dict[str, str] = {}
    for obj, table in items:
        if obj is None or obj.name is None:
            continue
        if obj.name in seen:
            table.fail("name", f"name {obj.name!r} is already used by {seen[obj.name]}")
        else:
            seen[obj.name] = table.label
    return tuple(obj for obj, _ in items if obj is not None)
