"""What the store hands out and takes in: its rows as named types."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence, TypedDict

from edge.events import Event

@dataclass(frozen=True)
class SmsRequest:
    """An SMS that routing asks for when an event is stored."""

    contact: str
    phone: str
    due: float  # unix time from which it may go
    fallback: bool  # only if no transport has accepted the event by `due`


@dataclass(frozen=True)
class SmsRow:
    seq: int
    contact: str
    phone: str
    fallback: bool
    attempts: int
    refs: list[int]  # +CMGS references of the parts already sent (a torn multipart SMS)
    kind: str  # the event's
    maybe_sent: bool  # an earlier attempt may have reached the network: this one resends


class Delivery(NamedTuple):
    """An event a transport still owes the platform."""

    event: Event
    attempts: int  # tries so far
    next_try: float  # unix time before which it is not tried again


class Backlog(NamedTuple):
    """What a transport still owes: how many events, and since when."""

    pending: int
    oldest_ts: float | None  # unix time of the oldest event owed; None when none is


class Reach(NamedTuple):
    """Where an event got to: the transports that accepted it, the SMS the network took."""

    accepted_by: tuple[str, ...]
    sms_sent: int


class Upload(NamedTuple):
    """A picture of an accepted event, still to be uploaded."""

    seq: int
    event_id: str
    name: str  # "snapshot", or "frame-N" for the Nth pre-trigger frame
    path: str


class SmsRecord(TypedDict):
    """One SMS row of an event as stored (``Store.sms_rows``): for reports and tests."""

    contact: str
    phone: str
    state: str  # waiting, pending, sent, failed, cancelled (see the schema)
    fallback: int  # 0 or 1
    attempts: int
    refs: str | None  # JSON list of +CMGS references
    last_error: str | None
    maybe_sent: int  # 0 or 1



def event_of_row(row: Sequence[Any]) -> Event:
    seq, id_, kind, subject, time_, data = row
    return Event(seq=seq, id=id_, kind=kind, subject=subject,
                 time=dt.datetime.fromisoformat(time_), data=json.loads(data))
