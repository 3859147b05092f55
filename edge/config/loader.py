"""The whole config: the file read, every table read by its section, every problem
reported at once (ConfigError, one line each), cross-table checks (pins, names)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from edge.config.checks import NAME_RE
from edge.config.inputs import INPUT_KINDS, Input, Pins, read_input
from edge.config.section import Section
from edge.config.sections import (Camera, Contact, Control, Drill, Gpio, Modem, Siren, Site,
                                  Sms, Storage, Uplink)
from edge.config.table import Problems, Table
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


_TABLES = {"site", "storage", "gpio", *(k.table for k in INPUT_KINDS), "siren", "camera",
           "modem", "uplink", "contact", "sms", "drill", "control"}


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
    pins = Pins()
    for key in raw:
        if key not in _TABLES:
            problems.add(f"[{key}]", "unknown table")

    site = Site.read(_required(problems, raw, "site"))
    storage = Storage.read(_required(problems, raw, "storage"))
    gpio = Gpio.read(_required(problems, raw, "gpio"))
    inputs = [(read_input(kind, table, pins), table)
              for kind in INPUT_KINDS for table in _array(problems, raw, kind.table)]
    if not any(t in raw for t in ("panic_button", "gate", "tamper")):
        problems.add("[[panic_button]]", "at least one input ([[panic_button]], [[gate]] or "
                                         "[[tamper]]) is required")
    _check_unique(inputs)

    siren_t = _section(problems, raw, "siren")
    siren = Siren.read(siren_t) if siren_t is not None else None
    if siren_t is not None and siren is not None:
        pins.claim(siren_t, "pin", siren.pin)
    camera = _optional(Camera, problems, raw, "camera")
    modem = _optional(Modem, problems, raw, "modem")
    uplink = _optional(Uplink, problems, raw, "uplink")
    contacts = [(Contact.read(t) if t.ok else None, t) for t in _array(problems, raw, "contact")]
    _check_unique(contacts)
    sms = _optional(Sms, problems, raw, "sms")
    drill = _optional(Drill, problems, raw, "drill")
    control = _optional(Control, problems, raw, "control")

    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(
        path=path, site=site, storage=storage, gpio=gpio,
        inputs=tuple(i for i, _ in inputs if i is not None), siren=siren, camera=camera,
        modem=modem, uplink=uplink, contacts=tuple(c for c, _ in contacts if c is not None),
        sms=sms or Sms(), drill=drill or Drill(), control=control or Control(),
    )


def _optional(cls: type[S], problems: Problems, raw: dict[str, Any], key: str) -> S | None:
    table = _section(problems, raw, key)
    return cls.read(table) if table is not None else None


def _section(problems: Problems, raw: dict[str, Any], key: str, required: bool = False
             ) -> Table | None:
    if key not in raw:
        if required:
            problems.add(f"[{key}]", "missing (required)")
            return Table(problems, f"[{key}]", {})
        return None
    if isinstance(raw[key], list):
        problems.add(f"[{key}]", f"must be a single [{key}] table, not [[{key}]]")
        return Table(problems, f"[{key}]", {})
    return Table(problems, f"[{key}]", raw[key])


def _required(problems: Problems, raw: dict[str, Any], key: str) -> Table:
    table = _section(problems, raw, key, required=True)
    assert table is not None
    return table


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


def _check_unique(items: Iterable[tuple[Input | Contact | None, Table]]) -> None:
    """Names are unique among (object, table) pairs; a repeat names the first owner."""
    seen: dict[str, str] = {}
    for obj, table in items:
        if obj is None or obj.name is None:
            continue
        if obj.name in seen:
            table.fail("name", f"name {obj.name!r} is already used by {seen[obj.name]}")
        else:
            seen[obj.name] = table.label
