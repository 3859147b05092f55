"""How soon a panic press reaches the modem as AT+CMGS, and how many SMS a second the worker
sends when the modem answers at once.

    .venv/bin/python bench/bench_sms.py [--presses N] [--backlog N] [--dir DIR]

The daemon is the real one (edge.service.build_daemon: owner loop on its own thread, a
real SQLite file, the SMS worker with the shipped modem deadlines) on gpiozero's
MockFactory pins; its modem is the ModemEmulator on a real pty, opened by pyserial. Only
the control socket and the signal handlers of `edge-alarm run` are left out.

Latency: perf_counter just before the button's pin is driven, to perf_counter when the
emulator has the line `AT+CMGS=<n>` (the emulator stamps every command line it reads).
After each press the bench waits for the whole PDU, silences (a latched alarm makes no new
event) and presses the next button. Each button is pressed again only after the daemon's
contact-bounce lockout, so twenty buttons take turns.

Throughput: the modem is unplugged, a backlog of panic events is stored, the modem is
plugged back; messages/s from the first AT+CMGS to the last PDU the emulator took.

Exit status 0 when the latency target is met, 1 when it is missed.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge import daemon as daemon_module
from edge.config import Config, parse
from edge.modem.emulator import ModemEmulator
from edge.service import build_daemon

BUTTON_PINS = tuple(range(2, 22))
SIREN_PIN = 22
LOCKOUT_MARGIN_S = 0.02
WAIT_S = 10.0  # a press that reaches no AT+CMGS in this long is a failure
LATENCY_P99_TARGET_S = 0.200
PRINCIPAL = "+8613800138000"


def bench_config(storage: Path, port: str) -> Config:
    """Twenty panic buttons and a siren; the principal is told of panics only, so every
    press is exactly one SMS (silences and modem faults send none)."""
    return parse({
        "site": {"name": "基准测试小学", "device_id": "bench-sms-1", "timezone": "Asia/Shanghai"},
        "storage": {"path": str(storage)},
        "gpio": {"pin_factory": "mock"},
        "panic_button": [{"name": f"button-{pin}", "label": f"{pin}号一键报警", "pin": pin}
                         for pin in BUTTON_PINS],
        "siren": {"pin": SIREN_PIN},
        "modem": {"port": port},
        "contact": [{"name": "principal", "phone": PRINCIPAL, "receives": ["panic"],
                     "may_command": True}],
    }, "bench")


class Gate:
    """The daemon on its own owner thread with the emulated modem, and the hand that
    presses its buttons."""

    def __init__(self, storage: Path, emulator: ModemEmulator):
        self.emulator = emulator
        self.factory = MockFactory()
        self.daemon = build_daemon(bench_config(storage, emulator.port),
                                   pin_factory=self.factory)
        self.sms = next(w for w in self.daemon.workers if w.part == "modem")
        self.pins = [self.factory.pin(p) for p in BUTTON_PINS]
        self._last_press = [-math.inf] * len(self.pins)
        self._owner = threading.Thread(target=self.daemon.run, name="owner", daemon=True)
        self._owner.start()
        self.wait_for(lambda: self.sms.status()["ok"], "the modem to be ready")

    def wait_for(self, predicate, what: str) -> None:
        """For set-up steps only; no measured time goes through here."""
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def press(self, i: int) -> float:
        """Press button ``i`` once its lockout has passed; seconds from the press to the
        emulator reading AT+CMGS. Returns after the PDU was taken and the alarm silenced."""
        wait = (self._last_press[i] + daemon_module.PANIC_LOCKOUT_S + LOCKOUT_MARGIN_S
                - time.monotonic())
        if wait > 0:
            time.sleep(wait)
        sent_before = len(self.emulator.sent)
        self._last_press[i] = time.monotonic()
        t0 = time.perf_counter()
        self.pins[i].drive_low()
        message = self.emulator.wait_sent(sent_before + 1, WAIT_S)[sent_before]
        if f"{BUTTON_PINS[i]}号一键报警" not in message.text:
            raise RuntimeError(f"button-{BUTTON_PINS[i]}: unexpected SMS {message.text!r}")
        issued = next(t for t, line in self.emulator.timed_commands
                      if t >= t0 and line.startswith("AT+CMGS="))
        self.pins[i].drive_high()
        self.daemon.loop.call(self.daemon.silence, "bench", "cli")
        return issued - t0

    def backlog(self, count: int) -> float:
        """Store ``count`` panic events while the modem is unplugged, plug it back, and
        return messages/s from the first AT+CMGS to the last PDU taken."""
        self.emulator.unplug()
        self.wait_for(lambda: not self.sms.status()["ok"], "the unplug to be noticed")
        sent_before = len(self.emulator.sent)
        label = "积压报警"

        def store_all():
            for _ in range(count):
                self.daemon.record("panic", f"button-{BUTTON_PINS[0]}", label)
        self.daemon.loop.call(store_all, timeout=60)
        plugged = time.perf_counter()
        self.emulator.replug()
        self.emulator.wait_sent(sent_before + count, WAIT_S + count * 0.5)
        done = time.perf_counter()
        first = next(t for t, line in self.emulator.timed_commands
                     if t >= plugged and line.startswith("AT+CMGS="))
        return count / (done - first)

    def close(self) -> None:
        self.daemon.request_stop()
        self._owner.join(WAIT_S)
        self.daemon.close()


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses to measure (default 200)")
    parser.add_argument("--backlog", type=int, default=200,
                        help="queued alarms for the throughput run (default 200; 0 skips)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="directory for the event store (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.backlog < 0:
        parser.error("--presses must be at least 1 and --backlog not negative")

    # The throughput run unplugs the modem: its warnings are expected, and go to stderr.
    logging.basicConfig(level=logging.WARNING, format="log: %(levelname)s %(name)s: %(message)s")
    print(f"python     {platform.python_implementation()} {platform.python_version()} "
          f"on {platform.machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sms-", dir=args.dir) as tmp, \
            ModemEmulator() as emulator:
        print(f"store      {tmp}", flush=True)
        gate = Gate(Path(tmp), emulator)
        try:
            latencies = [gate.press(n % len(BUTTON_PINS)) for n in range(args.presses)]
            rate = gate.backlog(args.backlog) if args.backlog else None
        finally:
            gate.close()

    ms = 1000.0
    worst = p99(latencies)
    ok = worst <= LATENCY_P99_TARGET_S
    print(f"press → AT+CMGS ({len(latencies)} presses): "
          f"p50 {statistics.median(latencies) * ms:.1f} ms   p99 {worst * ms:.1f} ms   "
          f"max {max(latencies) * ms:.1f} ms   target p99 ≤ {LATENCY_P99_TARGET_S * ms:.0f} ms"
          f"   {'PASS' if ok else 'FAIL'}")
    if rate is not None:
        print(f"throughput ({args.backlog} queued alarms, modem answering at once): "
              f"{rate:.1f} SMS/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
