"""The device's retained status on the broker, `{topic_prefix}/{device_id}/status`: what a
fleet dashboard shows of each school without asking it anything. Online with the summary
(alarm, faults, signal, backlog) while the device is connected; offline when it stopped
(published on a clean stop) or vanished (the Last Will, which the broker publishes)."""

from __future__ import annotations

import json
from typing import Any

from edge.status_doc import StatusDoc

# The status is looked at no more often than this (an alarm is on the broker as an event
# at once; the status follows), and at least this often for what changes without an
# event (the signal).
STATUS_MIN_INTERVAL_S = 2.0
STATUS_POLL_S = 30.0


def event_topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/{device_id}/events/{kind}"


def status_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/status"


def online(status: StatusDoc, backlog: dict[str, int]) -> dict[str, Any]:
    """The summary of a running device: ``backlog`` the events each transport still owes."""
    return {"online": True, "device_id": status["device_id"], "site": status["site"],
            "time": status["time"], "alarm": status["alarm"], "faults": status["faults"],
            "fault_reasons": status["fault_reasons"], "signal": status["modem"]["signal"],
            "backlog": backlog}


def offline(device_id: str, site: str, why: str, time: str | None = None) -> dict[str, Any]:
    """``why``: "stopped" (a clean stop) or "connection_lost" (the Last Will, written
    when the connection opens: no time)."""
    return {"online": False, "device_id": device_id, "site": site, "reason": why,
            "time": time}


def payload(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class StatusPacer:
    """When to look at the daemon's status again, and whether what it says is news: the
    status is published when it changes, at most every STATUS_MIN_INTERVAL_S."""

    def __init__(self) -> None:
        self.new_connection()

    def new_connection(self) -> None:
        """The broker has to hear the status again (the Will may have set it offline)."""
        self._looked_at: float | None = None
        self._stale = True
        self._published: dict[str, Any] | None = None

    def stale(self) -> None:
        """Something happened (an event, a delivery): the status may have changed."""
        self._stale = True

    def due_in(self, mono: float) -> float:
        """Seconds until the status should be looked at (0: now)."""
        if self._looked_at is None:
            return 0.0
        wait = STATUS_MIN_INTERVAL_S if self._stale else STATUS_POLL_S
        return max(0.0, self._looked_at + wait - mono)

    def looked(self, mono: float, message: dict[str, Any] | None) -> bool:
        """The status was looked at (``message`` None: it could not be had); whether
        ``message`` is news to publish."""
        self._looked_at, self._stale = mono, False
        if message is None:
            return False
        unchanged = self._published is not None and _without_time(message) == self._published
        if not unchanged:
            self._published = _without_time(message)
        return not unchanged


def _without_time(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "time"}
