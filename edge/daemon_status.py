"""The status document (`status`, `status --json`) of a running daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from edge import routing
from edge.errors import StorageError
from edge.status_doc import InputStatus, StatusDoc, TransportStatus, complete_part

if TYPE_CHECKING:
    from edge.daemon import Daemon
    from edge.store import Store

T = TypeVar("T")


def build_status(daemon: Daemon) -> StatusDoc:
    """What the daemon and each worker say of themselves; on the owner thread. A store
    read that fails leaves its fields empty and storage not ok: the status still answers
    (a damaged file is the storage fault, raised by the store's on_corrupt)."""
    failed: list[StorageError] = []
    inputs: dict[str, InputStatus] = {}
    for inp in daemon.cfg.inputs:
        entry: InputStatus = {"kind": inp.kind, "label": inp.label,
                              "active": daemon.pin_active(inp.name)}
        entry.update(daemon.inputs[inp.name].status())
        inputs[inp.name] = entry
    alarms = sorted(daemon.rule.latched.values(), key=lambda e: e.seq)
    status: StatusDoc = {
        "device_id": daemon.cfg.site.device_id,
        "site": daemon.cfg.site.name,
        "time": daemon.clock.now().astimezone(daemon.tz).isoformat(timespec="seconds"),
        "inputs": inputs,
        "siren": {"configured": daemon.cfg.siren is not None,
                  "on": bool(daemon.rule.siren and daemon.rule.siren.on)},
        "alarm": {"active": bool(alarms),
                  "inputs": [a.subject for a in alarms],
                  "since": alarms[0].time.isoformat(timespec="seconds") if alarms else None},
        # "ok" is null for a part that is not configured: neither working nor failing.
        "modem": {"configured": daemon.cfg.modem is not None,
                  "ok": False if daemon.cfg.modem is not None else None, "signal": None},
        "uplink": _transport_status(daemon, routing.UPLINK, failed),
        "faults": sorted(daemon.faults),
        "fault_reasons": dict(sorted(daemon.faults.items())),
        "storage": {"ok": "storage" not in daemon.faults, "unstored": len(daemon.unstored),
                    "dropped": daemon.unstored.dropped,
                    "last_seq": _read(daemon, lambda store: store.last_seq(), failed)},
        "clock_synced": daemon.clock_synced(),
        "drill": daemon.rule.drill_status(),
        "walktest": daemon.rule.walktest_status(),
        "overdue": daemon.overdue(),
        "indicator": daemon.lamp.state.value,
    }
    for name in daemon.cfg.transports:
        if name != routing.UPLINK:  # "uplink" is there whether configured or not
            complete_part(status, name, _transport_status(daemon, name, failed))
    for worker in daemon.workers:
        complete_part(status, worker.part, worker.status())
    if failed:
        status["storage"]["ok"] = False
    return status


def _read(daemon: Daemon, read: Callable[[Store], T], failed: list[StorageError]) -> T | None:
    """``read`` of the daemon's store; None when there is none, or it fails (added to
    ``failed``)."""
    if daemon.store is None:
        return None
    try:
        return read(daemon.store)
    except StorageError as e:
        failed.append(e)
        return None


def _transport_status(daemon: Daemon, name: str,
                      failed: list[StorageError]) -> TransportStatus:
    """The backlog of one transport; its worker adds whether it works ("ok")."""
    configured = name in daemon.cfg.transports
    status: TransportStatus = {"configured": configured, "ok": False if configured else None,
                               "pending": 0, "oldest_pending_s": None}
    backlog = (_read(daemon, lambda store: store.pending_count(name), failed)
               if configured else None)
    if backlog is not None:
        pending, oldest = backlog
        status["pending"] = pending
        if oldest is not None:
            status["oldest_pending_s"] = round(daemon.clock.now().timestamp() - oldest, 1)
    return status
