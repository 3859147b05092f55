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

import logging
import sys
import time
from pathlib import Path

from _common import (BUTTON_PINS, arg_parser, percentile, print_machine, site_config, spread,
                     start_on_mock_pins, verdict, wait_for, work_dir)

from edge.config import Config
from edge.modem.emulator import ModemEmulator

SIREN_PIN = 22
WAIT_S = 10.0  # a press that reaches no AT+CMGS in this long is a failure
LATENCY_P99_TARGET_S = 0.200
PRINCIPAL = "+8613800138000"


def bench_config(storage: Path, port: str) -> Config:
    """Twenty panic buttons and a siren; the principal is told of panics only, so every
    press is exactly one SMS (silences and modem faults send none)."""
    return site_config(storage, "bench-sms-1", label="{pin}号一键报警",
                       siren={"pin": SIREN_PIN},
                       modem={"port": port},
                       contact=[{"name": "principal", "phone": PRINCIPAL, "receives": ["panic"],
                                 "may_command": True}])


class Gate:
    """The daemon on its own owner thread with the emulated modem, and the hand that
    presses its buttons."""

    def __init__(self, storage: Path, emulator: ModemEmulator):
        self.emulator = emulator
        self._owner, self.buttons = start_on_mock_pins(bench_config(storage, emulator.port),
                                                       WAIT_S)
        self.daemon = self._owner.daemon
        self.sms = next(w for w in self.daemon.workers if w.part == "modem")
        self.wait_for(lambda: self.sms.status()["ok"], "the modem to be ready")

    def wait_for(self, predicate, what: str) -> None:
        """For set-up steps only; no measured time goes through here."""
        wait_for(predicate, what, WAIT_S, poll_s=0.01)

    def press(self, i: int) -> float:
        """Press button ``i`` once its lockout has passed; seconds from the press to the
        emulator reading AT+CMGS. Returns after the PDU was taken and the alarm silenced."""
        sent_before = len(self.emulator.sent)
        t0 = self.buttons.press(i)
        message = self.emulator.wait_sent(sent_before + 1, WAIT_S)[sent_before]
        if f"{BUTTON_PINS[i]}号一键报警" not in message.text:
            raise RuntimeError(f"{self.buttons.name(i)}: unexpected SMS {message.text!r}")
        issued = next(t for t, line in self.emulator.timed_commands
                      if t >= t0 and line.startswith("AT+CMGS="))
        self.buttons.release(i)
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
        self._owner.close()


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses to measure (default 200)")
    parser.add_argument("--backlog", type=int, default=200,
                        help="queued alarms for the throughput run (default 200; 0 skips)")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.backlog < 0:
        parser.error("--presses must be at least 1 and --backlog not negative")

    # The throughput run unplugs the modem: its warnings are expected, and go to stderr.
    logging.basicConfig(level=logging.WARNING, format="log: %(levelname)s %(name)s: %(message)s")
    print_machine(args.dir)
    with work_dir(args.dir, "bench-sms-") as tmp, ModemEmulator() as emulator:
        gate = Gate(tmp, emulator)
        try:
            latencies = [gate.press(n % len(BUTTON_PINS)) for n in range(args.presses)]
            rate = gate.backlog(args.backlog) if args.backlog else None
        finally:
            gate.close()

    ok = percentile(latencies, 99) <= LATENCY_P99_TARGET_S
    print(f"press → AT+CMGS ({len(latencies)} presses): {spread(latencies, 1)}   "
          f"target p99 ≤ {LATENCY_P99_TARGET_S * 1000:.0f} ms   {verdict(ok)}")
    if rate is not None:
        print(f"throughput ({args.backlog} queued alarms, modem answering at once): "
              f"{rate:.1f} SMS/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
