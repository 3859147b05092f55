"""What the guard-room page shows, as one JSON document: the daemon's status (over the
control socket) and the day's events (from the store, read-only). PageReader reads, on one
thread (its store connection); page_document composes. Text that strangers control (an
SMS's words and number, names typed anywhere) goes through safe_text; the page puts every
string in as text, never as HTML."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.control import request_status
from edge.errors import EdgeAlarmError, StorageError
from edge.events import PART_LABELS, Event
from edge.kinds import ALARM_KINDS, BY_NAME, LATCH_STATE, LATCHING_KINDS
from edge.safe_text import safe_text
from edge.status_doc import InputStatus, StatusDoc
from edge.store import Reach, Store
from edge.web.advice import advice
from edge.web.thumbnails import Thumbnails

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 2.0  # a daemon slower than this is shown as not answering, this round
EVENTS_SHOWN = 100  # the day's newest
DETAIL_CHARS = 120
# The data keys an event's line shows, in this order (who, how, why, what came back).
DETAIL_KEYS = ("by", "via", "reason", "result", "number", "text")

# (Chinese, English) of an input's state: by kind, active or not.
STATE_WORDS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "panic": (("按下", "pressed"), ("正常", "released")),
    "gate": (("开", "open"), ("关", "closed")),
    "tamper": (("被打开", "tampered"), ("正常", "closed")),
    "ack": (("已转动", "turned"), ("正常", "off")),
    "power": (("告警", "signalling"), ("正常", "normal")),
}
UNKNOWN_STATE = ("未知", "unknown")


class PageReader:
    """Reads the page's document and the snapshot files; all on one thread."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._store: Store | None = None
        self._inode = 0
        self._thumbnails = Thumbnails()

    def document(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or dt.datetime.now(self.cfg.site.tz)
        try:
            status: StatusDoc | None = request_status(self.cfg.control.socket,
                                                      timeout=STATUS_TIMEOUT_S)
            daemon_error = None
        except EdgeAlarmError as e:  # DaemonUnreachable, or the daemon failed to answer
            status, daemon_error = None, safe_text(e, DETAIL_CHARS)
        try:
            store = self._open_store()
            midnight = now.astimezone(self.cfg.site.tz).replace(hour=0, minute=0, second=0,
                                                                 microsecond=0)
            events = store.newest_events(midnight.timestamp(), EVENTS_SHOWN)
            pictures = store.pictures(e.seq for e in events)
            alarms = self._alarms(store, status)
            store_error = None
        except StorageError as e:
            self.close()  # opened afresh next time: the daemon may have started a new file
            events, pictures, alarms, store_error = [], {}, {}, safe_text(e, DETAIL_CHARS)
        return page_document(self.cfg, status, daemon_error, events, pictures, alarms,
                             store_error)

    def _open_store(self) -> Store:
        """The store, opened again when the daemon replaced the file (a corrupt one moved
        aside)."""
        path = self.cfg.storage.db_path
        try:
            inode = os.stat(path).st_ino
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
        if self._store is not None and inode != self._inode:
            self.close()
        if self._store is None:
            self._store = Store(path, readonly=True)
            self._inode = inode
        return self._store

    def _alarms(self, store: Store, status: StatusDoc | None) -> dict[str, tuple[Event, Reach]]:
        """Each latched input's alarm event and where it got to."""
        out = {}
        for name in status["alarm"]["inputs"] if status else ():
            alarm = store.last_event(name, LATCH_STATE)
            if alarm is not None and alarm.kind in LATCHING_KINDS:
                out[name] = (alarm, store.reach(alarm.seq))
        return out

    def snapshot_file(self, seq: int) -> Path | None:
        """The snapshot of event ``seq``, only if it is a file inside the snapshot
        directory (the store's word on its path is not trusted further than that)."""
        try:
            recorded = self._open_store().pictures([seq]).get(seq)
        except StorageError:
            return None
        if recorded is None:
            return None
        root = self.cfg.storage.snapshots_path.resolve()
        path = Path(recorded).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    def thumbnail(self, seq: int) -> bytes | None:
        path = self.snapshot_file(seq)
        return None if path is None else self._thumbnails.of(path)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def page_document(cfg: Config, status: StatusDoc | None, daemon_error: str | None,
                  events: list[Event], pictures: dict[int, str],
                  alarms: dict[str, tuple[Event, Reach]],
                  store_error: str | None) -> dict[str, Any]:
    overdue = set(status["overdue"]) if status else set()
    latched = status["alarm"]["inputs"] if status else []  # the oldest alarm first
    inputs = status["inputs"] if status else {}
    doc: dict[str, Any] = {
        "site": cfg.site.name,
        "device_id": cfg.site.device_id,
        "time": status["time"][11:19] if status else None,
        "daemon": {"ok": status is not None, "error": daemon_error},
        "store": {"ok": store_error is None, "error": store_error},
        "inputs": [_input(inp.name, inp.label, inp.kind, inputs.get(inp.name),
                          inp.name in latched, inp.name in overdue) for inp in cfg.inputs],
        "alarm": {"active": bool(status and status["alarm"]["active"]),
                  "alarms": [_alarm(cfg, name, *alarms[name]) if name in alarms else
                             {"input": name, "label": cfg.label_of(name)}
                             for name in latched]},
        "overdue": [{"name": name, "label": cfg.label_of(name)} for name in sorted(overdue)],
        "events": [_event(cfg, e, e.seq in pictures) for e in events],
    }
    if status is not None:
        doc.update({
            "siren": status["siren"],
            "indicator": status["indicator"],
            "modem": {key: status["modem"].get(key) for key in
                      ("configured", "ok", "signal", "reason")},
            "uplink": {key: status["uplink"].get(key) for key in
                       ("configured", "ok", "pending", "oldest_pending_s")},
            "faults": [_fault(cfg, part, reason)
                       for part, reason in status["fault_reasons"].items()],
            "drill": status["drill"],
            "walktest": {**status["walktest"],
                         "by": safe_text(status["walktest"]["by"] or "", DETAIL_CHARS)},
        })
    return doc


def _input(name: str, label: str, kind: str, entry: InputStatus | None, alarm: bool,
           overdue: bool) -> dict[str, Any]:
    active = entry["active"] if entry is not None else None
    if entry is not None and entry.get("open") is not None:  # a gate's debounced state
        active = entry["open"]
    words = STATE_WORDS.get(kind)
    zh, en = UNKNOWN_STATE if active is None or words is None else words[0 if active else 1]
    return {"name": name, "label": label, "kind": kind, "active": active, "state_zh": zh,
            "state_en": en, "alarm": alarm, "overdue": overdue}


def _alarm(cfg: Config, name: str, event: Event, reach: Reach) -> dict[str, Any]:
    return {"input": name, "label": cfg.label_of(name), "kind": event.kind,
            "time": _local_time(cfg, event), "platform": bool(reach.accepted_by),
            "sms_sent": reach.sms_sent,
            "delivered": bool(reach.accepted_by) or reach.sms_sent > 0}


def _fault(cfg: Config, part: str, reason: str) -> dict[str, str]:
    zh, en = advice(part, reason)
    return {"part": part, "label": cfg.label_of(part), "label_en": part if part in PART_LABELS
            else f"input {part}", "reason": safe_text(reason, DETAIL_CHARS), "advice_zh": zh,
            "advice_en": en}


def _event(cfg: Config, event: Event, has_picture: bool) -> dict[str, Any]:
    kind = BY_NAME.get(event.kind)
    details = [f"{key}: {safe_text(event.data[key], DETAIL_CHARS)}" for key in DETAIL_KEYS
               if event.data.get(key) not in (None, "")]
    return {"seq": event.seq, "kind": event.kind, "word": kind.word if kind else event.kind,
            "kind_en": event.kind.replace("_", " "), "subject": event.subject,
            "label": cfg.label_of(event.subject), "time": _local_time(cfg, event),
            "alarm": event.kind in ALARM_KINDS, "detail": " · ".join(details),
            "snapshot": f"/snapshot/{event.seq}" if has_picture else None,
            "thumbnail": f"/thumbnail/{event.seq}" if has_picture else None}


def _local_time(cfg: Config, event: Event) -> str:
    return event.time.astimezone(cfg.site.tz).strftime("%H:%M:%S")
