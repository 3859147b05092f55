"""The siren (and strobe) relay: on while a latched alarm is active, never longer than
max_on_s at a time, so a forgotten alarm does not wear out the neighbours or the relay."""

from __future__ import annotations

import logging
import threading

from edge.config import Siren as SirenConfig

log = logging.getLogger(__name__)


class Siren:
    def __init__(self, cfg: SirenConfig, pin_factory):
        from gpiozero import DigitalOutputDevice

        self.max_on_s = cfg.max_on_s
        self._relay = DigitalOutputDevice(cfg.pin, active_high=cfg.active_high,
                                          initial_value=False, pin_factory=pin_factory)
        # Monotonic deadline while the owner thread wants it sounding; None otherwise.
        self.off_at: float | None = None
        self._lock = threading.Lock()  # trip() comes from gpiozero's thread

    @property
    def on(self) -> bool:
        return bool(self._relay.value)

    def trip(self) -> None:
        """Switch the relay on at once, from the input's own thread, before the owner has
        even seen the edge: the siren must not wait behind a commit on a slow SD card.
        The owner then either keeps it on (sound) or, for contact bounce, stops it."""
        with self._lock:
            self._relay.on()

    def sound(self, monotonic: float, for_s: float | None = None) -> float:
        """Sound until ``for_s`` (at most max_on_s) from ``monotonic``, or longer if it
        already was to; returns the monotonic time it stops."""
        until = monotonic + (self.max_on_s if for_s is None else min(for_s, self.max_on_s))
        with self._lock:
            self._relay.on()
            # Never shorten: a drill press must not cut a real alarm's siren short.
            self.off_at = until if self.off_at is None else max(self.off_at, until)
            return self.off_at

    def stop(self) -> None:
        with self._lock:
            self._relay.off()
            self.off_at = None

    def expire(self, monotonic: float) -> bool:
        """Switch off once max_on_s has passed; True when it did."""
        if self.off_at is not None and monotonic >= self.off_at:
            log.info("siren off: its time is up (a latched alarm stays latched)")
            self.stop()
            return True
        return False

    def close(self) -> None:
        self._relay.off()
        self._relay.close()
