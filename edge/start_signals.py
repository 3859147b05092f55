"""The signals of `edge-alarm run` from its first instant: caught, not obeyed, until the
daemon is built and takes them over (install_signal_handlers). Without these a SIGHUP
while the config is read would kill the daemon (its default action)."""

from __future__ import annotations

import signal

_CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StartSignals:
    def __init__(self):
        self.stop_signal: int | None = None  # SIGTERM or SIGINT: stop as soon as started
        self.reload_requested = False  # SIGHUP: reload once started

    def install(self) -> StartSignals:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        # A parent may have left them blocked (the mask is inherited): the daemon must see
        # them, now that it knows what to do with them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CAUGHT)
        return self

    def _stop(self, signum, frame) -> None:
        self.stop_signal = signum

    def _reload(self, signum, frame) -> None:
        self.reload_requested = True
