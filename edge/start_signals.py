"""The signals of `edge-alarm run` from its first instant: caught, not obeyed, until the
daemon is built and takes them over (install_signal_handlers, below). Without these a SIGHUP
while the config is read would kill the daemon (its default action)."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.daemon import Daemon

log = logging.getLogger(__name__)

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


def install_signal_handlers(daemon: Daemon, early: StartSignals | None = None) -> None:
    """SIGTERM/SIGINT stop cleanly; SIGHUP asks the workers to reload (token file).
    ``early``: the handlers that caught signals while the daemon was being built; what
    they caught is done now (a reload runs once the daemon has started)."""
    def stop(signum, frame):
        log.info("signal %d: stopping", signum)
        daemon.request_stop()

    def reload(signum, frame):
        daemon.loop.post(log.info, "SIGHUP: reloading")
        for reload_fn in daemon.handoffs.reloads:
            daemon.loop.post(reload_fn)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    if early is not None:
        if early.reload_requested:
            reload(signal.SIGHUP, None)
        if early.stop_signal is not None:
            stop(early.stop_signal, None)
