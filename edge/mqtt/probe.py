"""`edge-alarm check`'s look at the broker while no daemon runs: does it take the device's
account? One connection as the device (the same client id and session, no Last Will),
closed with DISCONNECT at once; nothing is published."""

from __future__ import annotations

import time

from edge.config import Mqtt
from edge.errors import MqttError, SecretFileError
from edge.mqtt.link import CONNECT_TIMEOUT_S, Bell, MqttLink, read_password


class _Answer:
    """What the broker answered the CONNECT (a LinkListener)."""

    def __init__(self) -> None:
        self.came = False
        self.refused: str | None = None

    def connack(self, refused: str | None) -> None:
        self.came, self.refused = True, refused

    def puback(self, mid: int, refused: str | None) -> None:
        """Nothing is published."""

    def lost(self, why: str, was_connected: bool) -> None:
        if not self.came:
            self.came, self.refused = True, f"closed before CONNACK: {why}"


def probe(settings: Mqtt, device_id: str) -> str | None:
    """None when the broker accepts the device; else why not, in a few words."""
    try:
        answer = _Answer()
        link = MqttLink(settings, device_id, read_password(settings), None, answer)
        link.open()
    except (SecretFileError, MqttError) as e:
        return str(e)
    bell = Bell()
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not answer.came and time.monotonic() < deadline:
            link.serve(deadline - time.monotonic(), bell)
    finally:
        link.close(goodbye=True)
        bell.close()
    if not answer.came:
        return f"no CONNACK within {CONNECT_TIMEOUT_S:g} s"
    return answer.refused
