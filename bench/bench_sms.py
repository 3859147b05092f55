"""How soon a panic press reaches the modem as AT+CMGS, on an idle modem and behind a
backlog of other SMS on a slow one, and how many SMS a second the worker sends when the
modem answers at once.

    .venv/bin/python bench/bench_sms.py [--presses N] [--backlog N] [--busy-presses N]
                                        [--dir DIR]

The daemon is the real one (edge.service.build_daemon: owner loop on its own thread, a
real SQLite file, the SMS worker with the shipped modem deadlines) on gpiozero's
MockFactory pins; its modem is the ModemEmulator on a real pty, opened by pyserial. Only
the control socket and the signal handlers of `edge-alarm run` are left out.

Latency: perf_counter just before the button's pin is driven, to perf_counter when the
emulator has the line `AT+CMGS=<n>` (the emulator stamps every command line it reads).
After each press the bench waits for the whole PDU, silences (a latched alarm makes no new
event) and presses the next button. Each button is pressed again only after the daemon's
contact-bounce lockout, so twenty buttons take turns.

Behind a backlog: a second daemon whose platform cannot be reached has 100 fallback SMS
(gate notices) due, on a modem that takes 2 s per SMS (--send-time-s); each press comes at
a random moment of the SMS in flight, and is timed to the AT+CMGS of its panic SMS, which
must be the next one sent. Enough notices are stored that 100 are still due at every press.

Throughput: the modem is unplugged, a backlog of panic events is stored, the modem is
plugged back; messages/s from the first AT+CMGS to the last PDU the emulator took.

Exit status 0 when both latency targets are met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import logging
import random
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

from _common import (BUTTON_PINS, Figure, arg_parser, bench_main, p50_p99, percentile,
                     site_config, spread, start_on_mock_pins, wait_for, work_dir)

from edge.config import Config
from edge.sim.modem import ModemEmulator
from edge.sim.site import Contact, write_token

WAIT_S = 10.0  # a press that reaches no AT+CMGS in this long is a failure
LATENCY_P99_TARGET_S = 0.200
PRINCIPAL = "+8613800138000"
SEND_TIME_S = 2.0  # the slow modem's time per SMS, behind the backlog (--send-time-s)
DUE_BACKLOG = 100  # fallback SMS due at every press behind the backlog
BUSY_MARGIN_S = 0.200  # the target behind the backlog: the SMS in flight, then ours
FALLBACK_AFTER_S = 1
UNREACHABLE_URL = "http://127.0.0.1:9/api/v1/events"  # the discard port: refused


def bench_config(storage: Path, port: str) -> Config:
    """Twenty panic buttons and a siren; the principal is told of panics only, so every
    press is exactly one SMS (silences and modem faults send none)."""
    return site_config(storage, "bench-sms-1", label="{pin}号一键报警",
                       siren=True, modem_port=port,
                       contacts=[Contact("principal", PRINCIPAL, ["panic"], may_command=True)])


def busy_config(storage: Path, port: str) -> Config:
    """The same school with a platform that cannot be reached: the principal is told of
    gate openings too, by SMS once the platform has not taken them within a second."""
    storage.mkdir(parents=True, exist_ok=True)
    return site_config(storage, "bench-sms-2", label="{pin}号一键报警",
                       siren=True, modem_port=port, platform_url=UNREACHABLE_URL,
                       token_file=write_token(storage / "token", "bench"),
                       sms_fallback_after_s=FALLBACK_AFTER_S,
                       contacts=[Contact("principal", PRINCIPAL, ["panic", "gate_open"],
                                         may_command=True)])


class Gate:
    """The daemon on its own owner thread with the emulated modem, and the hand that
    presses its buttons."""

    def __init__(self, cfg: Config, emulator: ModemEmulator):
        self.emulator = emulator
        self._owner, self.buttons = start_on_mock_pins(cfg, WAIT_S)
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
        self._release(i)
        return issued - t0

    def _release(self, i: int) -> None:
        self.buttons.release(i)
        self.daemon.loop.call(self.daemon.silence, "bench", "cli")

    def store_backlog(self, count: int) -> None:
        """``count`` gate openings, each owing a fallback SMS a second later."""
        def store_all():
            for _ in range(count):
                self.daemon.record("gate_open", "bench-gate", "积压校门")
        self.daemon.loop.call(store_all, timeout=60)
        time.sleep(FALLBACK_AFTER_S)
        self.wait_for(lambda: self.emulator.sent, "the first fallback SMS")

    def due_fallbacks(self) -> int:
        with closing(sqlite3.connect(self.daemon.cfg.storage.db_path)) as db:
            return db.execute("SELECT count(*) FROM sms WHERE state='waiting' AND due <= ?",
                              (time.time(),)).fetchone()[0]

    def press_behind_backlog(self, i: int, rng: random.Random,
                             send_time_s: float) -> tuple[float, int]:
        """Press button ``i`` at a random moment of the SMS in flight; seconds from the
        press to the AT+CMGS of its panic SMS, and the fallback SMS due at the press."""
        time.sleep(rng.uniform(0, send_time_s))
        due = self.due_fallbacks()
        sent_before = len(self.emulator.sent)
        label = f"{BUTTON_PINS[i]}号一键报警"
        t0 = self.buttons.press(i)
        # Every AT+CMGS sends exactly one PDU here: the n-th sent is the n-th AT+CMGS.
        n = wait_for(lambda: next((n + 1 for n, m in enumerate(self.emulator.sent)
                                   if n >= sent_before and label in m.text), None),
                     f"the SMS of {self.buttons.name(i)}", WAIT_S + send_time_s * 2,
                     poll_s=0.01) - 1
        issued = [t for t, line in self.emulator.timed_commands
                  if line.startswith("AT+CMGS=")][n]
        self._release(i)
        return issued - t0, due

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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses to measure (default 200)")
    parser.add_argument("--backlog", type=int, default=200,
                        help="queued alarms for the throughput run (default 200; 0 skips)")
    parser.add_argument("--busy-presses", type=int, default=5,
                        help="panic presses behind 100 due fallback SMS on a modem taking "
                             "2 s per SMS (default 5, about 5 s each; 0 skips)")
    parser.add_argument("--send-time-s", type=float, default=SEND_TIME_S,
                        help=f"the slow modem's time per SMS behind the backlog (default "
                             f"{SEND_TIME_S:g})")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.backlog < 0 or args.busy_presses < 0 or args.send_time_s <= 0:
        parser.error("--presses must be at least 1, --backlog and --busy-presses not "
                     "negative, --send-time-s positive")
    return args


def run(args: argparse.Namespace) -> list[Figure]:
    # The throughput run unplugs the modem: its warnings are expected, and go to stderr.
    logging.basicConfig(level=logging.WARNING, format="log: %(levelname)s %(name)s: %(message)s")
    with work_dir(args.dir, "bench-sms-") as tmp:
        with ModemEmulator() as emulator:
            gate = Gate(bench_config(tmp / "idle", emulator.port), emulator)
            try:
                latencies = [gate.press(n % len(BUTTON_PINS)) for n in range(args.presses)]
                rate = gate.backlog(args.backlog) if args.backlog else None
            finally:
                gate.close()
        busy = (behind_backlog(tmp / "busy", args.busy_presses, args.send_time_s)
                if args.busy_presses else None)

    print(f"press → AT+CMGS ({len(latencies)} presses): {spread(latencies, 1)}")
    figures = [Figure("press → AT+CMGS, idle modem", p50_p99(latencies, 1),
                      f"p99 ≤ {LATENCY_P99_TARGET_S * 1000:.0f} ms",
                      percentile(latencies, 99) <= LATENCY_P99_TARGET_S)]
    if busy is not None:
        busy_latencies, least_due = busy
        print(f"press → AT+CMGS behind ≥ {least_due} due fallback SMS, modem "
              f"{args.send_time_s:g} s per SMS ({len(busy_latencies)} presses): "
              f"{spread(busy_latencies, 0)}")
        target_s = args.send_time_s + BUSY_MARGIN_S
        figures.append(Figure(
            f"press → AT+CMGS behind ≥ {least_due} due SMS, {args.send_time_s:g} s each",
            p50_p99(busy_latencies, 0), f"p99 ≤ {target_s * 1000:.0f} ms",
            percentile(busy_latencies, 99) <= target_s))
    if rate is not None:
        figures.append(Figure(f"SMS throughput, {args.backlog} queued alarms, modem at once",
                              f"{rate:.1f} SMS/s"))
    return figures


def behind_backlog(storage: Path, presses: int,
                   send_time_s: float) -> tuple[list[float], int]:
    """Latencies of ``presses`` presses behind the fallback backlog, and the fewest fallback
    SMS due at a press."""
    rng = random.Random(1)
    with ModemEmulator() as emulator:
        emulator.send_time = send_time_s
        gate = Gate(busy_config(storage, emulator.port), emulator)
        try:
            # Each press costs about two SMS of the backlog: the one in flight, its own.
            gate.store_backlog(DUE_BACKLOG + 3 * presses)
            runs = [gate.press_behind_backlog(n % len(BUTTON_PINS), rng, send_time_s)
                    for n in range(presses)]
        finally:
            gate.close()
    return [latency for latency, _ in runs], min(due for _, due in runs)


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
