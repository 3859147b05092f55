"""Who is owed what for an event, decided when it is stored (spec §5): the transports that
must deliver it and the contacts that get an SMS, now or as a fallback."""

from __future__ import annotations

from edge.config import Config
from edge.kinds import TEXTED_AS
from edge.store import SmsRequest

UPLINK = "uplink"


def transports(cfg: Config) -> tuple[str, ...]:
    return (UPLINK,) if cfg.uplink is not None else ()


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
            due = ts + cfg.uplink.sms_fallback_after_s
            out.append(SmsRequest(contact.name, contact.phone, due, fallback=True))
    return out
