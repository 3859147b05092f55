"""Walk test (巡检): which inputs are overdue for one. An input counts from its last
`input_tested` event, or, never tested, from its installation: the first start of the
daemon with it in the config (kept in the store's meta), so a new input is not overdue on
its first day, and one never tested becomes overdue due_days after it was put in."""

from __future__ import annotations

import datetime as dt

from edge.config import Config
from edge.store import Store

TESTED = ("input_tested",)


def _installed_key(name: str) -> str:
    return f"installed:{name}"


def note_installed(cfg: Config, store: Store, now: dt.datetime) -> None:
    """At start: the installation time of each input seen for the first time."""
    for inp in cfg.inputs:
        if store.get_meta(_installed_key(inp.name)) is None:
            store.set_meta(_installed_key(inp.name), str(now.timestamp()))


def overdue_inputs(cfg: Config, store: Store, at: dt.datetime) -> list[str]:
    """The inputs (names, config order) not walk-tested within [walktest] due_days before
    ``at``. The daily summary names them (未巡检)."""
    cutoff = at.timestamp() - cfg.walktest.due_days * 86400
    overdue = []
    for inp in cfg.inputs:
        last = store.last_event(inp.name, TESTED)
        since = last.ts if last is not None else float(
            store.get_meta(_installed_key(inp.name)) or at.timestamp())
        if since < cutoff:
            overdue.append(inp.name)
    return overdue
