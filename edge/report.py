"""The day's summary: gate openings in and after hours, alarms, drills, faults and the
upload backlog, for `edge-alarm report` and the principal's daily SMS."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from collections import Counter
from collections.abc import Sequence

from edge.config import Config
from edge.kinds import BY_NAME
from edge.routing import UPLINK
from edge.safe_text import safe_text
from edge.store import Store
from edge.walk_test import overdue_inputs

COUNTED = ("gate_open", "gate_after_hours", "gate_held_open", "panic", "tamper", "drill",
           "fault", "recovered", "silenced", "sms_refused", "power_lost", "acknowledged")
CSV_COLUMNS = ("date", "gate_open_in_hours", *COUNTED, "backlog")
# The alarm kinds (spec §3) in the order the summary names them; fault is counted apart.
REPORTED_ALARMS = ("panic", "tamper", "gate_after_hours", "gate_held_open", "power_lost")


def day_summary(cfg: Config, day: dt.date) -> dict:
    tz = cfg.site.tz
    start = dt.datetime.combine(day, dt.time(0), tz)
    end = start + dt.timedelta(days=1)
    counts: Counter = Counter()
    per_gate: Counter = Counter()
    backlog = 0
    overdue: list[str] = []  # not walk-tested within due_days by the day's end
    if cfg.storage.db_path.exists():
        store = Store(cfg.storage.db_path, readonly=True)
        try:
            for e in store.events(since=start.timestamp()):
                if e.ts >= end.timestamp():
                    continue  # seq order is not time order when the clock stepped
                counts[e.kind] += 1
                if e.kind == "gate_open":
                    per_gate[e.data.get("label", e.subject)] += 1
            backlog = store.pending_count(UPLINK).pending if cfg.uplink else 0
            overdue = overdue_inputs(cfg, store, end)
        finally:
            store.close()
    summary = {"date": day.isoformat(), **{k: counts[k] for k in COUNTED}, "backlog": backlog}
    summary["gate_open_in_hours"] = max(0, counts["gate_open"] - counts["gate_after_hours"])
    summary["per_gate"] = dict(per_gate)
    summary["overdue"] = overdue
    return summary


def summary_text(summary: dict, cfg: Config) -> str:
    s = summary
    shown = [k for k in REPORTED_ALARMS  # mains loss: where a power input is or it happened
             if k != "power_lost" or s[k] or any(i.kind == "power" for i in cfg.inputs)]
    parts = [f"开门{s['gate_open']}次（开放时段{s['gate_open_in_hours']}次，"
             f"非开放时段{s['gate_after_hours']}次）",
             f"报警{sum(s[k] for k in shown)}次（{_counts(s, shown, '')}）",
             _counts(s, ("drill",)), _counts(s, ("fault", "recovered"))]
    if cfg.uplink is not None:  # the backlog is now's, whichever day is reported
        parts.append(f"当前待上传{s['backlog']}条")
    return f"【{cfg.site.name}】{s['date']} 日报：" + "；".join(parts) + "。"


def print_report(cfg: Config, day: dt.date, as_csv: bool, out=None) -> None:
    out = out or sys.stdout
    summary = day_summary(cfg, day)
    if as_csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow([summary[c] for c in CSV_COLUMNS])
        return
    out.write(summary_text(summary, cfg) + "\n")
    for gate, n in sorted(summary["per_gate"].items()):  # a label as stored, escaped
        out.write(f"  {safe_text(gate)}：开门{n}次\n")
    out.write(f"  {_counts(summary, ('silenced', 'acknowledged', 'sms_refused'), '次', '；')}\n")
    if summary["overdue"]:
        labels = "、".join(cfg.label_of(name) for name in summary["overdue"])
        out.write(f"  未巡检（超过{cfg.walktest.due_days}天）：{safe_text(labels)}\n")


def _counts(summary: dict, kinds: Sequence[str], unit: str = "次", sep: str = "、") -> str:
    """"一键报警2、防拆0": each kind's Chinese word and its count."""
    return sep.join(f"{BY_NAME[kind].word}{summary[kind]}{unit}" for kind in kinds)
