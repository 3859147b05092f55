"""What the benches share: their command line, the machine and disk a run measured, the
simulated school of edge.sim.site with twenty panic buttons, the daemon on its owner thread,
the pins its buttons are pressed through, and the statistics they print.

The benches are run as scripts (`.venv/bin/python bench/bench_X.py`), which puts this
directory first on sys.path; they import this module as `_common`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from gpiozero.pins.mock import MockFactory

from edge.alarm_rule import PANIC_LOCKOUT_S
from edge.config import Config
from edge.events import new_event_id
from edge.service import build_daemon
from edge.sim.site import OwnerThread, PanicButton, SimSite
from edge.store import Store

SCHOOL = "基准测试小学"
# Twenty panic buttons on their own pins, pressed in turn. The daemon takes an active edge
# that comes within PANIC_LOCKOUT_S of the same input's previous one for contact bounce and
# makes no event of it; rather than patch that constant away (and measure a daemon that is
# not the shipped one), each button is pressed again only after its lockout has passed.
BUTTON_PINS = tuple(range(2, 22))
LOCKOUT_MARGIN_S = 0.02

T = TypeVar("T")


# ---------------------------------------------------------------- command line and machine


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """The bench's command line: the first paragraph of ``doc`` as its description, and
    --dir; the bench adds its own sizes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd(),
                        help="directory on the disk to measure; a temporary directory is "
                             "made and removed inside it (default: the current directory)")
    return parser


@contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory inside ``parent``, removed with everything in it afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        yield Path(tmp)


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(fstype, device, mount point) of the mount that holds ``path``."""
    real = os.path.realpath(path)
    best = ("?", "?", "/")
    best_len = -1
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            device, mount_point, fstype = line.split()[:3]
            mount_point = mount_point.replace("\\040", " ")
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > best_len:
                best, best_len = (fstype, device, mount_point), len(mount_point)
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info
                         if line.startswith(("model name", "Model"))), platform.processor())
    except OSError:
        return platform.processor() or "?"


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def print_machine(directory: Path) -> None:
    """What the numbers depend on: Python, SQLite, the CPUs, and the filesystem that
    ``directory`` (where the bench writes) is on."""
    fstype, device, mount_point = filesystem_of(directory)
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    lines = [f"python     {platform.python_implementation()} {platform.python_version()} "
             f"on {platform.machine()}, SQLite {sqlite3.sqlite_version}",
             f"cpus       {cpus} × {cpu_model()} ({usable} usable by this process)",
             f"load       {load_average()} (1, 5, 15 min; other work on the machine "
             "skews every figure)",
             f"directory  {directory.resolve()}: {fstype} on {device} (mounted at {mount_point})"]
    if fstype in ("tmpfs", "ramfs"):
        lines.append("           WARNING: a RAM filesystem; fsync costs nothing here and the "
                     "commit numbers say nothing about a disk")
    print("\n".join(lines), flush=True)


# ---------------------------------------------------------------- the daemon and its buttons


def site_config(storage: Path, device_id: str, *, buttons: int = len(BUTTON_PINS),
                label: str = "一键报警{pin}", siren: bool = False, **options) -> Config:
    """The simulated school of edge.sim.site with ``buttons`` panic buttons (button-<pin> on
    BUTTON_PINS, labelled ``label``.format(pin=pin)) in place of its inputs, a siren if
    asked, and SimSite's further ``options``; written beside ``storage`` and read back."""
    site = SimSite(storage, name=SCHOOL, device_id=device_id, gate=False, tamper=False,
                   siren=siren, panic_buttons=[
                       PanicButton(f"button-{pin}", label.format(pin=pin), pin)
                       for pin in BUTTON_PINS[:buttons]], **options)
    storage.parent.mkdir(parents=True, exist_ok=True)
    return site.load(storage.parent / f"{device_id}.toml")


class Buttons:
    """The mock pins of the first ``count`` panic buttons of site_config()."""

    def __init__(self, factory: MockFactory, count: int = len(BUTTON_PINS)):
        self.pins = [factory.pin(p) for p in BUTTON_PINS[:count]]
        self._last_press = [-math.inf] * count

    def __len__(self) -> int:
        return len(self.pins)

    @staticmethod
    def name(i: int) -> str:
        return f"button-{BUTTON_PINS[i]}"

    def press(self, i: int, before: Callable[[], object] | None = None) -> float:
        """Drive button ``i`` low once its lockout has passed; perf_counter just before.
        ``before`` runs right ahead of the press, after the wait."""
        wait = self._last_press[i] + PANIC_LOCKOUT_S + LOCKOUT_MARGIN_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if before is not None:
            before()
        t0 = time.perf_counter()
        self.pins[i].drive_low()
        # After the call: MockPin runs the daemon's edge callback inside it, so the edge's
        # own time is earlier, however long a busy machine held this thread up in between.
        self._last_press[i] = time.monotonic()
        return t0

    def release(self, i: int) -> None:
        self.pins[i].drive_high()


def start_on_mock_pins(cfg: Config, timeout: float) -> tuple[OwnerThread, Buttons]:
    """The daemon as `edge-alarm run` builds it (edge.service.build_daemon) on gpiozero's
    MockFactory, running; and the pins of its panic buttons."""
    factory = MockFactory()
    return OwnerThread(build_daemon(cfg, pin_factory=factory), timeout=timeout), Buttons(factory)


def wait_for(predicate: Callable[[], T], what: str, timeout: float, poll_s: float) -> T:
    """Poll ``predicate`` every ``poll_s`` until it returns something truthy (returned);
    RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:g} s: {what}")
        time.sleep(poll_s)
    return result


# ---------------------------------------------------------------- report


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank ``p``th percentile: with 1,000 values p99 is the 10th-slowest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]


def spread(values: list[float], decimals: int = 3) -> str:
    """p50, p99 and max of durations in seconds, in milliseconds."""
    return "   ".join(f"{name} {seconds * 1000:7.{decimals}f} ms" for name, seconds in (
        ("p50", statistics.median(values)), ("p99", percentile(values, 99)),
        ("max", max(values))))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Figure:
    """One line of a bench's result: what was measured, its target (empty for a figure
    shown for information) and whether the target was met (None without one)."""

    name: str
    measured: str
    target: str = ""
    ok: bool | None = None


def p50_p99(values: list[float], decimals: int = 2) -> str:
    """"p50 … ms, p99 … ms" of durations in seconds."""
    return (f"p50 {statistics.median(values) * 1000:.{decimals}f} ms, "
            f"p99 {percentile(values, 99) * 1000:.{decimals}f} ms")


def bench_main(parse: Callable[[list[str] | None], argparse.Namespace],
               run: Callable[[argparse.Namespace], list[Figure]]) -> int:
    """A bench run as a script: its arguments, the machine, its figures; the exit status
    (1 when a target was missed or the bench failed)."""
    args = parse(None)
    print_machine(args.dir)
    try:
        figures = run(args)
    except RuntimeError as e:
        print(f"FAILED: {e}")
        return 1
    return print_figures(figures)


def print_figures(figures: list[Figure]) -> int:
    """Each figure on a line of its own; the exit status: 1 when a target was missed."""
    for f in figures:
        mark = "    " if f.ok is None else verdict(f.ok)
        target = f"   (target {f.target})" if f.target else ""
        print(f"{mark}  {f.name}: {f.measured}{target}")
    return 0 if all(f.ok is not False for f in figures) else 1


def seed(store: Store, count: int, transport: str) -> None:
    """``count`` gate events as the daemon stores them: one commit each, with a delivery row
    owed to ``transport``."""
    start = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(days=1)
    for n in range(count):
        store.append("gate_open" if n % 2 else "gate_closed", "main_gate",
                     start + dt.timedelta(seconds=n), {"site": SCHOOL, "label": "校门"},
                     transports=[transport], event_id=new_event_id())


def no_pending(reader: Store, transport: str, what: str, timeout: float,
               poll_s: float) -> None:
    wait_for(lambda: reader.pending_count(transport)[0] == 0, what, timeout, poll_s)


def drain_seconds(cfg: Config, reader: Store, transport: str, events: int, *,
                  start_s: float, drain_s: float, poll_s: float) -> float:
    """Seconds from the daemon's start (on mock pins, within ``start_s``) until ``events``
    gate events, seeded into its store beforehand, are all delivered over ``transport``
    (within ``drain_s``)."""
    seed(reader, events, transport)
    t0 = time.perf_counter()
    owner, _ = start_on_mock_pins(cfg, start_s)
    try:
        no_pending(reader, transport, "the backlog drained", drain_s, poll_s)
        return time.perf_counter() - t0
    finally:
        owner.close()


def presses_delivered(cfg: Config, transport: str, presses: int,
                      expect: Callable[[str], Callable[[], float]], timeout: float,
                      poll_s: float) -> list[float]:
    """Press → delivered over ``transport``, ``presses`` times, the buttons in turn: before
    each press ``expect(subject)`` notes what the far end has, and the callable it returns
    waits for that button's panic there and answers the perf_counter time it arrived. Each
    alarm is silenced, and the silence delivered, before the next press."""
    owner, buttons = start_on_mock_pins(cfg, timeout)
    daemon = owner.daemon
    reader = Store(cfg.storage.db_path)
    times = []
    try:
        no_pending(reader, transport, "the start-up heartbeat", timeout, poll_s)
        for n in range(presses):
            i = n % len(buttons)
            arrived = expect(buttons.name(i))
            t0 = buttons.press(i)
            times.append(arrived() - t0)
            buttons.release(i)
            daemon.loop.call(daemon.silence, "bench", "cli")
            no_pending(reader, transport, "the silence delivered", timeout, poll_s)
    finally:
        reader.close()
        owner.close()
    return times
