"""`edge-alarm run`: the daemon with its control socket, its workers and its signals."""

from __future__ import annotations

import logging

from edge.config import Config
from edge.control import ControlServer
from edge.daemon import Daemon, install_signal_handlers
from edge.errors import EdgeAlarmError
from edge.start_signals import StartSignals

log = logging.getLogger(__name__)


def build_daemon(cfg: Config, **kwargs) -> Daemon:
    """The daemon with every configured worker attached (also used by the demo)."""
    daemon = Daemon(cfg, **kwargs)
    if cfg.modem is not None:
        from edge.sms import SmsWorker
        daemon.workers.append(SmsWorker(cfg, daemon))
    if cfg.camera is not None and cfg.camera.backend != "none":
        from edge.snapshots import CameraWorker
        daemon.workers.append(CameraWorker(cfg, daemon))
    if cfg.uplink is not None:
        from edge.uplink.worker import UplinkWorker
        daemon.workers.append(UplinkWorker(cfg, daemon))
    return daemon


def run_daemon(cfg: Config, start_signals: StartSignals | None = None) -> int:
    """``start_signals``: the handlers that caught signals since the process started."""
    daemon = build_daemon(cfg)
    server = ControlServer.for_daemon(cfg.control.socket, daemon)
    if server.in_use():
        # Two daemons on the same pins and modem would fight: the second one goes.
        raise EdgeAlarmError(f"another edge-alarm daemon answers on {server.path}")
    install_signal_handlers(daemon, start_signals)
    log.info("edge-alarm starting: %s (%s)", cfg.site.name, cfg.site.device_id)

    def start_control() -> None:
        try:
            server.start()
        except OSError as e:  # the alarm works without it; only the CLI cannot reach us
            log.error("control socket %s unusable: %s", server.path, e)
            daemon.part_failed("control", "unavailable", str(e))

    try:
        daemon.run(on_ready=start_control)
    finally:
        server.close()
        daemon.close()
    log.info("edge-alarm stopped")
    return 0
