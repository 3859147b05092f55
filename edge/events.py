"""Events: what happened, when, to which input or part. The unit of the store, of the
upload and of every SMS."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

# Re-exported for the modules that take the kind sets from here; each is derived from the
# one table of kinds in edge/kinds.py.
from edge.kinds import (
    ALARM_KINDS, BATTERY_STATE, GATE_STATE, KINDS, LATCH_STATE, LATCHING_KINDS, MAINS_STATE,
    SNAPSHOT_KINDS, STATE_FAMILIES,
)

# The parts whose faults are reported; inputs are reported under their own names.
PART_LABELS = {
    "modem": "短信模块",
    "camera": "摄像头",
    "uplink": "平台连接",
    "sia": "报警中心连接",
    "storage": "事件存储",
    "clock": "系统时钟",
    "siren": "警号",
    "indicator": "值班室指示灯",
    "control": "控制接口",
    "mqtt": "MQTT 连接",
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


def cloudevents_body(document: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """The bytes every transport sends of a CloudEvent (or a batch of them): compact
    UTF-8 JSON, so the HTTP body and the MQTT payload of an event are the same document."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def rfc3339(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def data_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
