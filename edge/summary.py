"""The daily summary SMS, `[summary]`: at its minute of site time, the day's numbers of
`edge-alarm report` (edge.report's day summary, so the two never drift) and what stands
now (faults still open, inputs overdue for a walk test; the signal as it is sent), to the
contacts whose `receives` lists `summary`.

It is no event (spec §3 has no such kind): the owner loop decides it and writes its text
to the store's meta table (SUMMARY_META, with its day) in one write; the SMS worker sends
it after every other SMS and notes each contact it went to (SENT_META + name, the day).
So a restart between the decision and the sends sends what is still owed, and a day is
decided at most once: the day in SUMMARY_META is never decided again. A crash after the
modem took one but before its note costs that contact a copy, as for any SMS (at least
once).

The timer is re-armed from the site-local wall clock at least every RECHECK_S: a clock
stepped by NTP after boot moves the due time with it, never sends a day twice (the day is
in the store) and skips none it was on for."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from edge.config import Config, Contact
from edge.errors import StorageError
from edge.kinds import SUMMARY
from edge.modem.pdu import split_text
from edge.owner import OwnerLoop
from edge.report import day_summary, summary_text
from edge.store import Store

log = logging.getLogger(__name__)

# {"day": "YYYY-MM-DD", "text": …}: the last day decided and its text but the signal,
# which the SMS worker adds as it sends (with_signal)
SUMMARY_META = "summary"
SENT_META = "summary_sent:"  # + a contact's name → the day of the last summary it got
# The longest the timer waits before it reads the wall clock again: a stepped clock is
# noticed within this.
RECHECK_S = 60.0
# More parts than any [sms] max_parts: how many a text needs before it is fitted.
_UNCUT_PARTS = 99

OverdueInputs = Callable[[], Sequence[str]]


class Decided(NamedTuple):
    day: str
    text: str


def decided(store: Store) -> Decided | None:
    """The last day's summary decided, or None."""
    value = store.get_meta(SUMMARY_META)
    return Decided(**json.loads(value)) if value else None


def recipients(cfg: Config) -> list[Contact]:
    return [c for c in cfg.contacts if SUMMARY in c.receives]


def owed(cfg: Config, store: Store, skip: set[str]) -> tuple[Contact, Decided] | None:
    """The next contact (not in ``skip``) the decided summary has not gone to yet, and
    the summary."""
    summary = decided(store)
    if summary is None:
        return None
    contact = next((c for c in recipients(cfg) if c.name not in skip
                    and store.get_meta(SENT_META + c.name) != summary.day), None)
    return None if contact is None else (contact, summary)


def mark_sent(store: Store, contact_name: str, summary: Decided) -> None:
    store.set_meta(SENT_META + contact_name, summary.day)


def summary_body(cfg: Config, day: dt.date, faults: Sequence[str],
                 overdue: Sequence[str]) -> str:
    """The report's text of ``day`` and what stands now: the parts in fault and the inputs
    overdue for a walk test, named while the SMS with its signal fits [sms] max_parts,
    else only counted (what still does not fit is cut by the modem's split, with "…")."""
    report = summary_text(day_summary(cfg, day), cfg).removesuffix("。")
    labels = ([cfg.label_of(part) for part in faults], [cfg.label_of(name) for name in overdue])
    body = ""
    for named in (True, False):
        body = "；".join((report, _listed("未恢复故障", labels[0], named),
                         _listed("未巡检", labels[1], named)))
        if len(split_text(with_signal(body, 31), _UNCUT_PARTS)[1]) <= cfg.sms.max_parts:
            break
    return body


def with_signal(body: str, signal: int | None) -> str:
    """The SMS: the decided body and the signal as the modem reads it when it is sent."""
    return f"{body}；信号{'未知' if signal is None else signal}。"


def _listed(what: str, names: Sequence[str], named: bool) -> str:
    if not names:
        return f"{what}0项"
    return f"{what}：{'、'.join(names)}" if named else f"{what}{len(names)}项"


class DailySummary:
    """The owner loop's side: arms the timer and decides each day's summary once."""

    def __init__(self, cfg: Config, loop: OwnerLoop, store: Callable[[], Store | None],
                 faults: Callable[[], Sequence[str]], decided_now: Callable[[], None],
                 overdue_inputs: OverdueInputs):
        """``store``: the daemon's store now (None while it cannot be opened); ``faults``:
        the parts failing now; ``decided_now``: wakes the SMS worker; ``overdue_inputs``:
        the names of the inputs overdue for a walk test (Daemon.overdue)."""
        assert cfg.summary is not None
        self.cfg = cfg
        self._at = cfg.summary.at
        self._loop = loop
        self._store = store
        self._faults = faults
        self._decided_now = decided_now
        self._overdue_inputs = overdue_inputs

    def check(self) -> None:
        """Decide today's summary if its minute has passed and it is not decided yet (at
        start: one missed while the device was off), then arm the timer again."""
        now = self._loop.clock.now().astimezone(self.cfg.site.tz)
        due = dt.datetime.combine(now.date(), self._at, now.tzinfo)
        if now >= due:
            try:
                self._decide(now.date())
            except Exception:  # tried again at the next check; the timer stays armed
                log.exception("daily summary of %s not decided", now.date())
            due += dt.timedelta(days=1)
        wait = (due - now).total_seconds()
        self._loop.after(min(wait, RECHECK_S), self.check)

    def _decide(self, day: dt.date) -> None:
        store = self._store()
        if store is None:
            raise StorageError("the store is not open")
        last = decided(store)
        if last is not None and last.day >= day.isoformat():
            return  # decided already (or the clock went back a day)
        text = summary_body(self.cfg, day, self._faults(), self._overdue_inputs())
        store.set_meta(SUMMARY_META, json.dumps({"day": day.isoformat(), "text": text},
                                                ensure_ascii=False))
        log.info("daily summary of %s decided for %d contact(s)", day,
                 len(recipients(self.cfg)))
        self._decided_now()
