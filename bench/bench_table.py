"""Every figure of bench/ in one table: each bench in turn, its details on stderr, then the
machine and one line per figure (measured, target, PASS or SHORT) on stdout, as a Markdown
table the README quotes. Run as `bench/run` (which picks the checkout's .venv).

    bench/run [--quick] [--dir DIR]

--quick takes fewer samples and a 5 s idle window (a test runs it so that this script
keeps working; its numbers are too few to judge by). A bench that fails is one SHORT line
with its error, and the others still run.

Exit status 0 when every target is met, 1 when one is short.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

import bench_busy
import bench_camera
import bench_core
import bench_idle
import bench_mqtt
import bench_sms
import bench_uplink
import bench_web
from _common import Figure, print_machine

# (bench, its arguments for a full run, for a quick one); "--dir" is added.
BENCHES: tuple[tuple[ModuleType, list[str], list[str]], ...] = (
    (bench_core, [], ["--presses", "20", "--busy-presses", "5"]),
    (bench_busy, [], ["--presses", "5", "--backlog", "500"]),
    (bench_idle, [], ["--idle-s", "5", "--settle-s", "1", "--starts", "1"]),
    (bench_sms, [], ["--presses", "3", "--backlog", "3", "--busy-presses", "1",
                     "--send-time-s", "0.5"]),
    (bench_uplink, [], ["--events", "200", "--single", "50", "--presses", "5"]),
    (bench_mqtt, [], ["--events", "200", "--presses", "5"]),
    (bench_camera, [], ["--presses", "3", "--pre-trigger", "1"]),
    (bench_web, [], ["--presses", "2", "--settle-s", "0.5"]),
)


def figures_of(bench: ModuleType, argv: list[str]) -> list[Figure]:
    """The bench's figures, its own printing sent to stderr; a failed bench is one figure."""
    name = bench.__name__
    print(f"==> {name} {' '.join(argv)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            figures = bench.run(bench.parse(argv))
    except Exception as e:
        traceback.print_exc()
        figures = [Figure(name, f"failed: {type(e).__name__}: {e}".splitlines()[0],
                          "runs", False)]
    print(f"    {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return figures


def table(figures: list[Figure]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    rows = ["| figure | measured | target | |", "|---|---|---|---|"]
    rows += [f"| {cell(f.name)} | {cell(f.measured)} | {cell(f.target or '—')} | "
             f"{'' if f.ok is None else 'PASS' if f.ok else 'SHORT'} |" for f in figures]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples and a 5 s idle window, to see that it runs")
    parser.add_argument("--dir", type=Path, default=Path.cwd(),
                        help="directory on the disk to measure (default: the current one)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    figures: list[Figure] = []
    for bench, full, quick in BENCHES:
        figures += figures_of(bench, [*(quick if args.quick else full), "--dir", str(args.dir)])
    print(f"bench/run{' --quick' if args.quick else ''}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {time.monotonic() - started:.0f} s")
    print_machine(args.dir)
    print()
    print(table(figures))
    return 0 if all(f.ok is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
