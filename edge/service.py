"""`edge-alarm run`: the daemon with its control socket, its workers and its signals."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edge.config import Config
from edge.control import ControlServer
from edge.daemon import Daemon, Worker, install_signal_handlers
from edge.errors import EdgeAlarmError
from edge.start_signals import StartSignals

if TYPE_CHECKING:  # for the annotations only: the workers are imported when configured
    from edge.camera import Camera
    from edge.modem.modem import ModemTimings

log = logging.getLogger(__name__)


class Transport(Worker, Protocol):
    """A worker that delivers events (the uplink, MQTT): woken when a picture it may be
    holding an event back for is attached."""

    def wake(self) -> None: ...


@dataclass(frozen=True)
class WorkerOptions:
    """What a test, a bench or the demo chooses of the workers: ``camera`` instead of
    the configured backend, the modem's deadlines, the transports' backoff jitter, the SIA
    link's exchange deadline and the MQTT link's PUBACK deadline (None: their own)."""

    camera: Camera | None = None
    modem_timings: ModemTimings | None = None
    uplink_rng: Callable[[], float] = random.random
    sia_exchange_s: float | None = None
    mqtt_puback_s: float | None = None


def build_daemon(cfg: Config, *, options: WorkerOptions = WorkerOptions(),
                 **kwargs: Any) -> Daemon:
    """The daemon with every configured worker attached and wired to the others (also
    used by the demo). Each worker gets the daemon's port, never the daemon. A worker's
    module is imported only when it is configured."""
    daemon = Daemon(cfg, **kwargs)
    port = daemon.port
    workers: list[Worker] = []
    transports: list[Transport] = []
    if cfg.modem is not None:
        from edge.modem.modem import ModemTimings
        from edge.sms import SmsWorker
        sms = SmsWorker(cfg, port, timings=options.modem_timings or ModemTimings())
        daemon.handoffs.sent_from_memory = sms.sent_from_memory
        daemon.handoffs.direct_sms = sms
        daemon.handoffs.summary_decided = sms.wake
        workers.append(sms)
        if cfg.escalation is not None:
            from edge.escalation import Escalation
            workers.append(Escalation(cfg, daemon.loop, daemon.clock, daemon.clock_steps,
                                      sms, record=daemon.record, store=lambda: daemon.store,
                                      latched=lambda: daemon.latched))
    if cfg.uplink is not None:
        from edge.uplink.worker import UplinkWorker
        uplink = UplinkWorker(cfg, port, rng=options.uplink_rng)
        daemon.handoffs.reloads.append(uplink.reload)
        transports.append(uplink)
    if cfg.sia is not None:
        from edge.sia.worker import EXCHANGE_S, SiaWorker
        transports.append(SiaWorker(cfg, port, exchange_s=options.sia_exchange_s or EXCHANGE_S,
                                    rng=options.uplink_rng))
    if cfg.mqtt is not None:
        from edge.mqtt.worker import PUBACK_TIMEOUT_S, MqttWorker
        transports.append(MqttWorker(cfg, port, puback_s=options.mqtt_puback_s or PUBACK_TIMEOUT_S,
                                     rng=options.uplink_rng))
    if cfg.camera is not None and cfg.camera.backend != "none":
        from edge.snapshots import CameraWorker

        def picture_attached() -> None:
            for transport in transports:
                transport.wake()
        workers.append(CameraWorker(cfg, port, picture_attached=picture_attached,
                                    camera=options.camera))
    daemon.workers += [*workers, *transports]
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
