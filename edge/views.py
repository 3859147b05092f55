"""What the CLI prints: the status and the event log, for people and for programs."""

from __future__ import annotations

import csv
import datetime as dt
import re
import sys
from typing import TextIO

from edge.config import Config
from edge.events import KINDS, Event
from edge.safe_text import safe_json, safe_text
from edge.status_doc import StatusDoc
from edge.store import Store

# At most 12 digits: more is no duration anyone means (and int() of thousands is refused).
_DURATION_RE = re.compile(r"^([0-9]{1,12})\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
CSV_COLUMNS = ("id", "seq", "kind", "subject", "time", "label", "data")
# The days a command may name: a Pi without a clock starts in 1970; the last day is the
# last whose end a datetime can hold.
FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date(9999, 12, 30)


def parse_duration(text: str) -> int | None:
    """'30m', '2h', '7d', '90s', '1w' → seconds; None when it is not a duration."""
    m = _DURATION_RE.match(text.strip())
    return int(m.group(1)) * _UNIT_S[m.group(2)] if m else None


def parse_since(text: str, tz, now: dt.datetime) -> float:
    """'today' (local midnight), a duration ('24h', '7d', '30m'), or an ISO-8601 time
    (a time without offset is the site's local time) → unix time."""
    text = text.strip()
    if text == "today":
        local = now.astimezone(tz)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    seconds = parse_duration(text)
    try:
        if seconds is not None:
            when = now - dt.timedelta(seconds=seconds)
        else:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: use an ISO-8601 time (2026-11-28T07:00), "
                         "'today', or a duration such as 24h or 7d") from None
    except OverflowError:  # a duration reaching before year 1
        when = dt.datetime.min
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    if not FIRST_DAY <= when.date() <= LAST_DAY:
        raise ValueError(f"--since {text}: out of range ({FIRST_DAY} to {LAST_DAY})")
    return when.timestamp()


def read_events(cfg: Config, since: str | None, kind: str | None,
                now: dt.datetime | None = None) -> list[Event]:
    """The event log, read from the store directly (the daemon may be stopped)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"--kind {kind!r} is not a kind ({', '.join(KINDS)})")
    now = now or dt.datetime.now(dt.timezone.utc)
    since_ts = parse_since(since, cfg.site.tz, now) if since else None
    if not cfg.storage.db_path.exists():
        return []
    store = Store(cfg.storage.db_path, readonly=True)
    try:
        return store.events(since=since_ts, kind=kind, by_time=True)
    finally:
        store.close()


def print_events(events: list[Event], fmt: str, out=None) -> None:
    # Events hold strangers' text (an SMS, a sender's name, a modem's answer): escaped in
    # every format, so the terminal shows it and never obeys it.
    out = out or sys.stdout
    if fmt == "json":
        out.write(safe_json([e.to_json() for e in events], indent=1) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for e in events:
            row = e.to_json()
            writer.writerow([row["id"], row["seq"], row["kind"], safe_text(row["subject"]),
                             row["time"], safe_text(e.data.get("label", "")),
                             safe_json(e.data, sort_keys=True)])
    else:
        for e in events:
            details = {k: v for k, v in e.data.items()
                       if k not in ("site", "label", "clock_synced") and v is not None}
            extra = " ".join(f"{k}={v}" for k, v in sorted(details.items()))
            line = (f"{e.seq:>6}  {e.time.isoformat(timespec='seconds')}  {e.kind:<16} "
                    f"{e.subject:<12} {e.data.get('label', '')}  {extra}")
            out.write(safe_text(line).rstrip() + "\n")


def print_status(status: StatusDoc, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:  # the modem's and the network's strings (operator) escaped
        out.write(safe_json(status) + "\n")
        return
    alarm = status["alarm"]
    lines = [f"{status['site']} ({status['device_id']})  {status['time']}"]
    lines.append("ALARM ACTIVE: " + ", ".join(alarm["inputs"]) + f" since {alarm['since']}"
                 if alarm["active"] else "no active alarm")
    lines.append(f"siren: {'ON' if status['siren']['on'] else 'off'}"
                 + ("" if status["siren"]["configured"] else " (none configured)"))
    for name, inp in status["inputs"].items():
        state = "unavailable" if inp["active"] is None else (
            ("open" if inp["active"] else "closed") if inp["kind"] == "gate"
            else ("ACTIVE" if inp["active"] else "idle"))
        lines.append(f"  {inp['kind']:<7} {name:<14} {inp['label']}: {state}")
    modem = status["modem"]
    if modem.get("configured"):
        signal = "unknown" if modem["signal"] is None else f"{modem['signal']}/31"
        state = "ok" if modem["ok"] else (modem.get("reason") or "FAULT")
        lines.append(f"modem: {state}, signal {signal}")
    else:
        lines.append("modem: off (no [modem])")
    up = status["uplink"]
    if up.get("configured"):
        lines.append(f"uplink: {'ok' if up['ok'] else 'FAULT'}, {up['pending']} pending")
    else:
        lines.append("uplink: off (no [uplink])")
    held = status["storage"]
    if held["unstored"] or held.get("dropped"):
        lines.append(f"storage: {held['unstored']} events held in memory, not yet written; "
                     f"{held.get('dropped', 0)} dropped")
    faults = status["faults"]
    lines.append("faults: " + (", ".join(f"{p} ({status['fault_reasons'].get(p)})"
                                         for p in faults) if faults else "none"))
    walk = status["walktest"]
    if walk["active"]:
        lines.append(f"walk test: on until {walk['until']} (by {walk['by']})")
    if status["overdue"]:
        lines.append("overdue for a walk test: " + ", ".join(status["overdue"]))
    sms = modem.get("sms")
    if sms:
        lines.append(f"sms: {sms['replies']} replies, {sms['replies_suppressed']} held back by "
                     f"the reply limits; {sms['refused']} refused, "
                     f"{sms['incoming_dropped']} dropped unread")
    out.write("\n".join(map(safe_text, lines)) + "\n")
