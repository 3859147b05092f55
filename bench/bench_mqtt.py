"""How fast the MQTT uplink gets events onto a broker, and what it costs in memory: a
5,000-event backlog drained at QoS 1 with its in-flight window, the time from a panic press
until a dashboard subscribed to the broker has the event, and the resident memory that
[mqtt] adds to the daemon (paho-mqtt is imported only with it). The broker is a real
Mosquitto (edge.sim.broker) on 127.0.0.1.

    .venv/bin/python bench/bench_mqtt.py [--events N] [--presses N] [--dir DIR]

Backlog: N events committed to a real store (one transaction each, as the daemon writes
them, each with its mqtt delivery row), then the real daemon (edge.service.build_daemon,
gpiozero MockFactory pins) starts and its MqttWorker publishes them; the clock runs from the
daemon's start until the store holds no pending mqtt delivery (each marked on its PUBACK).

Press→on the broker: the real daemon with twenty panic buttons; a button is pressed (its
mock pin driven low) and the clock stops when a subscriber to the device's events topic has
the panic. Each alarm is silenced before the next press.

Memory: VmRSS of a fresh interpreter that has imported what `edge-alarm run` imports
(edge.service, edge.daemon), before and after importing the MQTT worker and paho-mqtt.

Exit status 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import (BUTTON_PINS, Figure, arg_parser, bench_main, drain_seconds, p50_p99,
                     presses_delivered, site_config, spread, wait_for, work_dir)

from edge.config import Config
from edge.routing import MQTT
from edge.sim.broker import Broker
from edge.store import Store

DEVICE_ID = "bench-1"
PREFIX = "bench"
WAIT_S = 10.0  # a press not on the broker in this long is a failure
POLL_S = 0.002
DRAIN_TARGET = 500.0  # events/s
PRESS_P50_TARGET_S = 0.050
RSS_TARGET_KB = 10 * 1024

_RSS_PROBE = """
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
import edge.service, edge.daemon
before = rss()
import edge.mqtt.worker, paho.mqtt.client
print(rss() - before)
"""


def bench_config(root: Path, port: int, buttons: int = 1) -> Config:
    return site_config(root / "var", DEVICE_ID, buttons=buttons, mqtt_keys={
        "url": f"mqtt://127.0.0.1:{port}", "topic_prefix": PREFIX})




class Dashboard:
    """A subscriber to the device's events: when each panic's subject arrived."""

    def __init__(self, port: int):
        import paho.mqtt.client as paho

        self.panics: dict[str, float] = {}  # subject → perf_counter at arrival
        self._ready = threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-dashboard",
                             protocol=paho.MQTTv5)
        client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/{DEVICE_ID}/events/panic", 1)
        client.on_subscribe = lambda *_: self._ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not self._ready.wait(WAIT_S):
            raise RuntimeError("the dashboard did not subscribe")
        self._client = client

    def _on_message(self, client, userdata, message) -> None:
        import json
        self.panics[json.loads(message.payload)["subject"]] = time.perf_counter()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# ---------------------------------------------------------------- measurements


def drain(root: Path, broker: Broker, events: int) -> float:
    """Events per second of the daemon publishing ``events`` stored events."""
    cfg = bench_config(root, broker.port)
    reader = Store(cfg.storage.db_path)
    try:
        elapsed = drain_seconds(cfg, reader, MQTT, events, start_s=WAIT_S,
                                drain_s=max(60.0, events / 50), poll_s=POLL_S)
    finally:
        reader.close()
    return events / elapsed


def press_to_broker(root: Path, broker: Broker, presses: int) -> list[float]:
    cfg = bench_config(root, broker.port, buttons=len(BUTTON_PINS))
    dashboard = Dashboard(broker.port)

    def expect(subject: str):
        dashboard.panics.pop(subject, None)
        return lambda: wait_for(lambda: dashboard.panics.get(subject),
                                f"{subject} on the broker", WAIT_S, POLL_S)
    try:
        return presses_delivered(cfg, MQTT, presses, expect, WAIT_S, POLL_S)
    finally:
        dashboard.close()


def rss_added_kb() -> int:
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE], check=True, capture_output=True,
                          text=True)
    return int(done.stdout)


# ---------------------------------------------------------------- report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--events", type=int, default=5_000,
                        help="backlog drained by the daemon (default 5000)")
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses timed until on the broker (default 200)")
    args = parser.parse_args(argv)
    if min(args.events, args.presses) < 1:
        parser.error("--events and --presses must be at least 1")
    return args


def run(args: argparse.Namespace) -> list[Figure]:
    with work_dir(args.dir, "bench-mqtt-") as work:
        with Broker(work / "broker") as broker:
            (work / "drain").mkdir()
            (work / "presses").mkdir()
            rate = drain(work / "drain", broker, args.events)
            presses = press_to_broker(work / "presses", broker, args.presses)
    added = rss_added_kb()
    print(f"press -> on the broker, {len(presses)} presses: {spread(presses, 2)}")
    return [
        Figure(f"MQTT backlog of {args.events} published, each marked on its PUBACK",
               f"{rate:.0f} events/s", f"≥ {DRAIN_TARGET:.0f} events/s", rate >= DRAIN_TARGET),
        Figure("press → on the MQTT broker at a subscriber", p50_p99(presses),
               f"p50 ≤ {PRESS_P50_TARGET_S * 1000:g} ms",
               statistics.median(presses) <= PRESS_P50_TARGET_S),
        Figure("RSS [mqtt] adds (edge.mqtt.worker, paho-mqtt)", f"{added / 1024:.1f} MiB",
               f"≤ {RSS_TARGET_KB / 1024:g} MiB", added <= RSS_TARGET_KB),
    ]


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
