"""A config section is a frozen dataclass whose fields are the keys of its table: each
field's default is the key's default (written nowhere else), and one generic reader reads
every field from the table with that default, its TOML type, its check and its RANGES entry.
A key that is more than one checked value (a list of kinds) names a reader of its own."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, get_args, get_type_hints

from edge.config.checks import absolute_path
from edge.config.table import REQUIRED, Check, Table

# A reader of its own, for a key that is more than one checked value (a list of kinds, a
# table of templates): (table, key, default) → the value.
Reader = Callable[[Table, str, Any], Any]

# The TOML type a field of this Python type is written as; a Path is an absolute path.
_TOML_TYPES: dict[type, type] = {int: int, float: float, bool: bool, str: str, Path: str}


@dataclass(frozen=True)
class Key:
    """How a field is read, beyond what its type and default say."""

    toml: type | tuple[type, ...] | None = None  # the TOML types taken (default: the field's)
    check: Check | None = None
    read: Reader | None = None
    secret: bool = False  # never echoed in an error (a PIN)


def setting(default: Any = dataclasses.MISSING, *, toml: type | tuple[type, ...] | None = None,
            check: Check | None = None, read: Reader | None = None, secret: bool = False,
            default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A field read from its table key: with no default the key is required."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"key": Key(toml, check, read, secret)})


def key_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def read_keys(cls: type, table: Table, names: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """The fields of dataclass ``cls`` read from ``table``: all of them with their own
    defaults, or only ``names`` (field → default, REQUIRED when it must be given)."""
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    wanted = names if names is not None else {f.name: key_default(f) for f in fields}
    return {f.name: read_key(table, f, hints[f.name], wanted[f.name])
            for f in fields if f.name in wanted}


def read_key(table: Table, f: dataclasses.Field[Any], hint: Any, default: Any) -> Any:
    how: Key = f.metadata.get("key", Key())
    if how.read is not None:
        return how.read(table, f.name, default)
    python_type = not_none(hint)
    toml = how.toml or _TOML_TYPES[python_type]
    if table.has_range(f.name):
        return table.number(f.name, toml, default)
    check = how.check or (absolute_path if python_type is Path else None)
    value = table.get(f.name, toml, default, check, secret=how.secret)
    return Path(value) if python_type is Path and isinstance(value, str) else value


def not_none(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if isinstance(hint, types.UnionType):
        return next(arg for arg in get_args(hint) if arg is not type(None))
    return hint


class Section:
    """A section read from one table: its dataclass fields are the table's keys."""

    @classmethod
    def read(cls, table: Table) -> Self:
        section = cls(**read_keys(cls, table))
        table.finish()
        return section
