"""Who is owed what for an event, decided when it is stored (spec §5): the transports that
must deliver it, the contacts that get an SMS, now or as a fallback, and whether it waits
for a picture. Decisions only: no worker, camera or transport is imported here."""

from __future__ import annotations

from edge.config import Config
from edge.events import SNAPSHOT_KINDS, Event
from edge.kinds import TEXTED_AS
from edge.store import SmsRequest

UPLINK = "uplink"
MQTT = "mqtt"


def sms_requests(cfg: Config, kind: str, ts: float, data: dict) -> list[SmsRequest]:
    """One request per contact told of ``kind``: at once for [sms] immediate kinds (and
    when no transport exists), else as a fallback due sms_fallback_after_s after ``ts``.
    An event whose ``data`` says it repeats one already texted (a stranger's further
    refused SMS within the hour) owes no SMS: it is recorded, and no flood reaches a phone."""
    if cfg.modem is None or data.get("repeat"):
        return []
    out = []
    texted_as = TEXTED_AS.get(kind)  # a drill: to whoever receives panic, at once
    for contact in cfg.contacts:
        told = kind in contact.receives or texted_as in contact.receives
        if not told:
            continue
        if kind in cfg.sms.immediate or texted_as is not None or not cfg.has_transport:
            out.append(SmsRequest(contact.name, contact.phone, ts, fallback=False))
        else:
            due = ts + cfg.sms_fallback_after_s
            out.append(SmsRequest(contact.name, contact.phone, due, fallback=True))
    return out


def snapshot_wanted(event: Event, cfg: Config) -> bool:
    """Whether the camera takes a picture of ``event`` (and the uplink holds it back
    for the picture's sha256)."""
    if cfg.camera is None or cfg.camera.backend == "none":
        return False
    return event.kind in SNAPSHOT_KINDS or (
        event.kind == "gate_open" and cfg.camera.snapshot_on_gate_open)
