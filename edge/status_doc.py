"""The status document: what ``Daemon.status()`` answers, ``edge-alarm status --json``
prints (spec §1 names the fields it holds at least), and the CLI, ``check``, the STATUS
SMS and the demo read. Its JSON form is the interface; these types say what it holds."""

from __future__ import annotations

from typing import Mapping, NotRequired, TypedDict, cast


class InputExtra(TypedDict, total=False):
    """What an input's handler adds to its status entry."""
    open: bool | None  # gates only: the debounced state (None: not known yet)


class InputStatus(InputExtra):
    kind: str  # panic, gate, tamper, ack, power
    label: str
    active: bool | None  # the pin's state; None when it could not be claimed


class SirenStatus(TypedDict):
    configured: bool
    on: bool


class AlarmStatus(TypedDict):
    active: bool
    inputs: list[str]  # the latched inputs, oldest alarm first
    since: str | None  # the oldest alarm's time (ISO 8601, the site's offset)


class ModemHealth(TypedDict):
    """What the SMS worker last learnt of the modem."""

    ok: bool
    signal: int | None  # AT+CSQ rssi 0-31; None when unknown
    reason: str | None  # why not ok (edge.modem.modem.ModemHealth)
    operator: str | None


class SmsCounts(TypedDict):
    """What SMS cost since the start: held in memory, replies, refusals, drops."""

    memory: int
    sent_from_memory: int
    replies_queued: int
    unrecorded: int
    dropped: int
    replies: int
    replies_suppressed: int
    refused: int
    incoming_dropped: int


class ModemStatus(TypedDict):
    configured: bool
    ok: bool | None  # None when no [modem] is configured
    signal: int | None
    # From the SMS worker, when there is one:
    reason: NotRequired[str | None]
    operator: NotRequired[str | None]
    lines_dropped: NotRequired[int]
    sms: NotRequired[SmsCounts]


class TransportStatus(TypedDict):
    """One transport's entry ("uplink", "mqtt", "sia"): its delivery backlog."""
    configured: bool
    ok: bool | None  # None when the transport is not configured
    pending: int  # events it has not delivered yet
    oldest_pending_s: float | None
    last_error: NotRequired[str | None]  # from the transport's worker
    connected: NotRequired[bool]  # mqtt: the link to the broker is up


class CameraStatus(TypedDict):
    configured: bool
    backend: str
    ok: bool | None  # None until the camera's first start has been tried


class StorageStatus(TypedDict):
    ok: bool
    unstored: int  # events held in memory while the store cannot be written
    dropped: int  # events the memory cap dropped
    last_seq: int | None


class DrillStatus(TypedDict):
    active: bool
    until: str | None  # ISO 8601, the site's offset


class WalktestStatus(TypedDict):
    active: bool
    until: str | None  # ISO 8601, the site's offset
    by: str | None  # who runs it


class StatusDoc(TypedDict):
    device_id: str
    site: str
    time: str  # ISO 8601 to the second, the site's offset
    inputs: dict[str, InputStatus]  # by input name
    siren: SirenStatus
    alarm: AlarmStatus
    modem: ModemStatus
    uplink: TransportStatus  # always present (spec §1), "configured" false without [uplink]
    mqtt: NotRequired[TransportStatus]  # with [mqtt]
    sia: NotRequired[TransportStatus]  # with [sia]
    camera: NotRequired[CameraStatus]  # only with a [camera]
    faults: list[str]  # the parts now failing, sorted
    fault_reasons: dict[str, str]  # part → reason
    storage: StorageStatus
    clock_synced: bool
    drill: DrillStatus
    walktest: WalktestStatus
    overdue: list[str]  # inputs not walk-tested within [walktest] due_days
    indicator: str  # the guard's lamp: off, blinking, steady, fault (edge.indicator)


def complete_part(status: StatusDoc, part: str, fields: Mapping[str, object]) -> None:
    """Add a worker's own fields to the entry of its part ("modem", "uplink", "camera"),
    making the entry when the daemon has none for it."""
    # The part is a name known at run time, so the document is reached as the plain
    # mapping it is; the entries' fields are the ones StatusDoc declares.
    entries = cast(dict[str, dict[str, object]], status)
    entries.setdefault(part, {}).update(fields)
