"""Events: what happened, when, to which input or part. The unit of the store, of the
upload and of every SMS."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "panic", "gate_open", "gate_closed", "gate_after_hours", "gate_held_open", "tamper",
    "fault", "recovered", "silenced", "acknowledged", "heartbeat", "drill", "sms_refused",
    "power_lost", "power_restored", "battery_low",
)
# Alarms that latch until someone silences them, and sound the siren meanwhile
# (GB 50394: an emergency alarm never resets itself).
LATCHING_KINDS = frozenset({"panic", "tamper"})
# Kinds whose events carry a camera snapshot.
SNAPSHOT_KINDS = frozenset({"panic", "tamper", "gate_after_hours"})
# The alarm kinds of spec §3: kept before any other kind when memory must drop events.
ALARM_KINDS = frozenset({"panic", "tamper", "gate_after_hours", "gate_held_open", "fault",
                         "power_lost"})
# Kinds whose latest event per subject is a state restored at start (latched or silenced,
# gate open or closed, mains lost or back, battery low or not): that row outlives retention.
LATCH_STATE = (*sorted(LATCHING_KINDS), "silenced")
GATE_STATE = ("gate_open", "gate_closed", "gate_held_open")
MAINS_STATE = ("power_lost", "power_restored")
BATTERY_STATE = ("battery_low", "battery_ok")
STATE_FAMILIES = (LATCH_STATE, GATE_STATE, MAINS_STATE, BATTERY_STATE)

# The parts whose faults are reported; inputs are reported under their own names.
PART_LABELS = {
    "modem": "短信模块",
    "camera": "摄像头",
    "uplink": "平台连接",
    "storage": "事件存储",
    "clock": "系统时钟",
    "siren": "警号",
    "control": "控制接口",
}

CLOUDEVENT_TYPE_PREFIX = "cn.edu.school.edge-alarm."


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    kind: str
    subject: str
    time: dt.datetime  # aware, in the site's UTC offset
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> float:
        return self.time.timestamp()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "kind": self.kind, "subject": self.subject,
                "time": rfc3339(self.time), "data": self.data}

    def to_cloudevent(self, device_id: str) -> dict[str, Any]:
        """The CloudEvents 1.0 form of spec §4, with the `sequence` extension so the
        platform can see a gap in a device's events."""
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": f"edge-alarm/{device_id}",
            "type": CLOUDEVENT_TYPE_PREFIX + self.kind,
            "time": rfc3339(self.time),
            "subject": self.subject,
            "sequence": f"{self.seq:012d}",
            "datacontenttype": "application/json",
            "data": self.data,
        }


def rfc3339(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def data_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
