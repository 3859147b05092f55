"""How fast a panic press sounds the siren and is committed while the daemon is busy: a
backlog of 10,000 events draining to a slow platform, the camera capturing each alarm's
picture, and each alarm's SMS going out on the modem.

    .venv/bin/python bench/bench_busy.py [--presses 200] [--backlog 10000] [--dir DIR]

The daemon is the one `edge-alarm run` builds (edge.service.build_daemon, its owner loop
on its own thread, a real SQLite file) with every worker: the uplink to the platform
stand-in on 127.0.0.1 answering each request after PLATFORM_DELAY_S, the test-pattern
camera with its pre-trigger ring, the SMS worker on the modem emulator (a real pty) taking
SMS_SEND_S per SMS. Before it starts, the backlog is committed to its store as the daemon
writes events (one transaction each, each owing the platform).

Each press is planned for an instant: the bench sleeps until then and drives the button's
mock pin low. Like the thread of lgpio that calls gpiozero on a Pi, it must first take the
interpreter's lock from whichever thread of the daemon holds it, so the time from the
planned instant to the siren's pin going high counts that wait. The siren's pin and the
commit are timed as in bench_core.py (no polling). Each alarm is silenced before the next
press; the presses come PRESS_EVERY_S apart, on twenty buttons in turn. The backlog must
still be draining when the last press is done, or the run is refused.

Beside it, the machine's floor over the same window: how late a process of its own that
does nothing but sleep 10 ms at a time is woken. A press starts with a thread waking, so
press → siren cannot be faster than this machine wakes threads; on a shared virtual
machine the tail of that is the hypervisor's, and it shows here.

Exit status 0 when the target is met, 1 when it is missed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from _common import (Buttons, Figure, arg_parser, bench_main, p50_p99, percentile, seed,
                     site_config, work_dir)
from bench_core import WAIT_S, CommitWatch, SirenWatchPin
from gpiozero.pins.mock import MockFactory

from edge.config import Config
from edge.routing import UPLINK
from edge.service import build_daemon
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sim.site import Contact, OwnerThread, write_token
from edge.store import Store

TOKEN = "bench-token"
PRESS_EVERY_S = 0.1
PLATFORM_DELAY_S = 0.3  # per request of up to 100 events: 10,000 take over 30 s
SMS_SEND_S = 0.2
SIREN_P99_TARGET_S = 0.001
PEERS_START_S = 30.0  # a fresh interpreter importing edge.sim on a loaded machine
PEERS_STOP_S = 10.0


def serve_peers(conn: Connection) -> None:
    """The child process of Peers: the modem emulator and the platform stand-in, their
    (pty path, URL) sent on ``conn``; at the parent's word, the count of SMS sent, and out."""
    with ModemEmulator() as emulator, PlatformStub(token=TOKEN) as platform:
        emulator.send_time = SMS_SEND_S
        platform.set_delay(PLATFORM_DELAY_S)
        conn.send((emulator.port, platform.url))
        conn.recv()
        conn.send(len(emulator.sent))


class Peers:
    """The modem emulator and the platform stand-in in a child process of their own. On a
    Pi they are other machines; run here, their Python threads (the stand-in parses each
    batch of 100 events) would take the interpreter's lock from the daemon and lengthen the
    very wait this bench measures."""

    def __init__(self) -> None:
        self._conn, child_conn = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve_peers, args=(child_conn,), name="bench-busy-peers", daemon=True)
        self._process.start()
        child_conn.close()
        self.modem_port, self.platform_url = self._receive(PEERS_START_S, "start")
        self.sms_sent: int | None = None

    def _receive(self, timeout: float, what: str):
        try:
            if self._conn.poll(timeout):
                return self._conn.recv()
        except EOFError:
            pass
        self._kill()
        raise RuntimeError(f"the modem emulator and platform stand-in did not {what} "
                           f"(child exit status {self._process.exitcode})")

    def _kill(self) -> None:
        self._process.kill()
        self._process.join(PEERS_STOP_S)
        self._conn.close()

    def __enter__(self) -> "Peers":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._kill()
            return
        self._conn.send("stop")
        self.sms_sent = self._receive(PEERS_STOP_S, "stop")
        self._process.join(PEERS_STOP_S)
        self._conn.close()


# A process of its own that only sleeps and wakes, every WAKE_EVERY_S until its stdin
# closes, then prints how late each wake-up was (seconds, one per line).
WAKE_PROBE = """
import select, sys, time
late = []
while True:
    start = time.perf_counter()
    if select.select([sys.stdin], [], [], WAKE_EVERY_S)[0]:
        break
    late.append(time.perf_counter() - start - WAKE_EVERY_S)
print("\\n".join(map(repr, late)))
"""
WAKE_EVERY_S = 0.01


class WakeFloor:
    """How late this machine wakes a sleeping process while the bench runs: the floor under
    press → siren, which starts with a thread waking (lgpio's on a Pi, the bench's here).
    On a quiet machine it is tens of microseconds; on a shared virtual machine its tail is
    the hypervisor's, and no daemon can be faster than it."""

    def __init__(self) -> None:
        self._probe = subprocess.Popen(
            [sys.executable, "-c", WAKE_PROBE.replace("WAKE_EVERY_S", repr(WAKE_EVERY_S))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def lateness(self) -> list[float]:
        out, _ = self._probe.communicate("\n", timeout=PEERS_STOP_S)
        return [float(line) for line in out.split()]


def bench_config(root: Path, modem_port: str, platform_url: str) -> Config:
    return site_config(root / "var", "bench-busy", siren=True, camera_pre_trigger_s=5,
                       modem_port=modem_port, platform_url=platform_url,
                       token_file=write_token(root / "token", TOKEN),
                       contacts=[Contact("principal", "+8613800138000", ["panic"])])


def sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.perf_counter()))


def presses_while_busy(cfg: Config, presses: int) -> tuple[list[float], list[float], int]:
    """(press → siren, press → committed) of each press, and the backlog still owed to
    the platform after the last."""
    factory = MockFactory(pin_class=SirenWatchPin)
    daemon = build_daemon(cfg, pin_factory=factory)
    watch = CommitWatch()
    daemon.workers.append(watch)
    buttons = Buttons(factory)
    owner = OwnerThread(daemon, timeout=WAIT_S)
    siren_s, commit_s = [], []
    try:
        for n in range(presses):
            i = n % len(buttons)
            SirenWatchPin.went_high.clear()
            watch.committed.clear()
            planned = time.perf_counter() + PRESS_EVERY_S
            buttons.press(i, before=lambda: sleep_until(planned))
            if not SirenWatchPin.went_high.wait(WAIT_S) or not watch.committed.wait(WAIT_S):
                raise RuntimeError(f"{buttons.name(i)}: no siren or no committed panic")
            siren_s.append(SirenWatchPin.high_at - planned)
            commit_s.append(watch.at - planned)
            buttons.release(i)
            daemon.loop.call(daemon.silence, "bench", "cli")
        left = daemon.loop.call(lambda: daemon.store.pending_count(UPLINK)[0])
    finally:
        owner.close()
    return siren_s, commit_s, left


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses to measure (default 200)")
    parser.add_argument("--backlog", type=int, default=10_000,
                        help="events owed to the platform at the start (default 10000)")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.backlog < 1:
        parser.error("--presses and --backlog must be at least 1")
    return args


def run(args: argparse.Namespace) -> list[Figure]:
    with work_dir(args.dir, "bench-busy-") as root, Peers() as peers:
        cfg = bench_config(root, peers.modem_port, peers.platform_url)
        store = Store(cfg.storage.db_path)
        try:
            seed(store, args.backlog, UPLINK)
        finally:
            store.close()
        floor = WakeFloor()
        siren_s, commit_s, left = presses_while_busy(cfg, args.presses)
        wakes = floor.lateness()
    sms = peers.sms_sent
    if left == 0:
        raise RuntimeError("the backlog drained before the last press: the presses were "
                           "not made while busy")
    print(f"{len(siren_s)} presses while a backlog of {args.backlog} drained "
          f"({left} still owed after the last), {sms} SMS sent")
    busy = f"{args.backlog} backlog draining, camera, SMS"
    return [
        Figure(f"press → siren while busy ({busy})", p50_p99(siren_s, 3),
               f"p99 ≤ {SIREN_P99_TARGET_S * 1000:g} ms",
               percentile(siren_s, 99) <= SIREN_P99_TARGET_S),
        Figure("press → committed while busy", p50_p99(commit_s, 2)),
        Figure(f"the machine's floor: a sleeping process woken late by, over the same "
               f"window ({len(wakes)} wake-ups)", p50_p99(wakes, 3)),
    ]


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
