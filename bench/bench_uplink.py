"""How fast the uplink gets events to the platform: a 10,000-event backlog drained in batches,
the same work done one POST per event, and the time from a panic press until the platform
has accepted the event. The platform is the stand-in (edge.sim.platform.PlatformStub, a
real http.server) on 127.0.0.1.

    .venv/bin/python bench/bench_uplink.py [--events N] [--single N] [--presses N] [--dir DIR]

Backlog: N events committed to a real store (one transaction each, as the daemon writes
them, each with its uplink delivery row), then the real daemon (edge.service.build_daemon,
gpiozero MockFactory pins) starts and its UplinkWorker drains them; the clock runs from the
daemon's start until the store holds no pending delivery.

One POST per event: the worker has no setting that forces one event per request, so this
is measured without it: for each event, HttpUplink.post_events([event]) and then
Store.mark_accepted for it, the two steps the worker takes per request, against the same
platform stand-in in the same run.

Press→accepted: the real daemon with twenty panic buttons; a button is pressed (its mock
pin driven low) and the clock stops when the platform stand-in has taken the panic event
(it has stored it and is answering 200). Each alarm is silenced and its `silenced` event
delivered before the next press, so every press meets an idle uplink, and a button is
pressed again only after the daemon's PANIC_LOCKOUT_S.

Exit status 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import (BUTTON_PINS, Figure, arg_parser, bench_main, drain_seconds, p50_p99,
                     presses_delivered, seed, site_config, spread, work_dir)

from edge.config import Config
from edge.sim.platform import PlatformStub
from edge.routing import UPLINK
from edge.store import Store
from edge.uplink.http import ACCEPTED, HttpUplink

TOKEN = "bench-token"
DEVICE_ID = "bench-1"
WAIT_S = 10.0  # a press not accepted in this long is a failure
POLL_S = 0.002
BATCHED_TARGET = 2000.0  # events/s
RATIO_TARGET = 5.0  # batched rate / one-per-request rate
PRESS_P50_TARGET_S = 0.050


def bench_config(root: Path, url: str, buttons: int = 1) -> Config:
    return site_config(root / "var", DEVICE_ID, buttons=buttons,
                       platform_url=url, token_file=root / "token")




# ---------------------------------------------------------------- measurements


def drain_batched(root: Path, stub: PlatformStub, events: int) -> float:
    """Events per second of the daemon draining ``events`` stored events."""
    cfg = bench_config(root, stub.url)
    reader = Store(cfg.storage.db_path)
    try:
        before = len(stub.events)
        elapsed = drain_seconds(cfg, reader, UPLINK, events, start_s=WAIT_S,
                                drain_s=max(60.0, events / 100), poll_s=POLL_S)
        taken = len(stub.events) - before
        if taken < events:
            raise RuntimeError(f"the platform took {taken} events, not {events}")
    finally:
        reader.close()
    return events / elapsed


def drain_one_per_request(root: Path, stub: PlatformStub, events: int) -> float:
    """Events per second when every event is its own POST (see the module's docstring)."""
    cfg = bench_config(root, stub.url)
    store = Store(cfg.storage.db_path)
    client = HttpUplink(stub.url, str(root / "token"))
    try:
        seed(store, events, UPLINK)
        rows = store.pending_deliveries(UPLINK, events)
        t0 = time.perf_counter()
        for event, _, _ in rows:
            result = client.post_events([event.to_cloudevent(DEVICE_ID)])
            if result.outcome != ACCEPTED:
                raise RuntimeError(f"event {event.seq} not accepted: {result.detail}")
            store.mark_accepted(UPLINK, [event.seq], str(result.status), time.time())
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
        store.close()
    return len(rows) / elapsed


def press_to_accepted(root: Path, stub: PlatformStub, presses: int) -> list[float]:
    cfg = bench_config(root, stub.url, buttons=len(BUTTON_PINS))

    def expect(subject: str):
        seen = len(stub.events)

        def arrived() -> float:
            if not stub.wait_for(lambda: any(e.subject == subject and e.type.endswith(".panic")
                                             for e in stub.events[seen:]), WAIT_S):
                raise RuntimeError(f"{subject}: the panic did not reach the platform")
            return time.perf_counter()
        return arrived
    return presses_delivered(cfg, UPLINK, presses, expect, WAIT_S, POLL_S)


# ---------------------------------------------------------------- report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = arg_parser(__doc__)
    parser.add_argument("--events", type=int, default=10_000,
                        help="backlog drained by the daemon (default 10000)")
    parser.add_argument("--single", type=int, default=2_000,
                        help="events sent one POST each (default 2000)")
    parser.add_argument("--presses", type=int, default=200,
                        help="panic presses timed until accepted (default 200)")
    args = parser.parse_args(argv)
    if min(args.events, args.single, args.presses) < 1:
        parser.error("--events, --single and --presses must be at least 1")
    return args


def run(args: argparse.Namespace) -> list[Figure]:
    with work_dir(args.dir, "bench-uplink-") as work:
        runs = {}
        for name in ("batched", "single", "presses"):
            runs[name] = work / name
            runs[name].mkdir()
            token = runs[name] / "token"
            token.write_text(TOKEN + "\n")
            token.chmod(0o600)
        with PlatformStub(token=TOKEN) as stub:
            batched = drain_batched(runs["batched"], stub, args.events)
            single = drain_one_per_request(runs["single"], stub, args.single)
            presses = press_to_accepted(runs["presses"], stub, args.presses)

    ratio = batched / single
    print(f"press -> accepted by the platform, {len(presses)} presses: {spread(presses, 2)}")
    return [
        Figure(f"backlog of {args.events} drained, batched", f"{batched:.0f} events/s",
               f"≥ {BATCHED_TARGET:.0f}", batched >= BATCHED_TARGET),
        Figure("one POST per event (post_events + mark_accepted each)",
               f"{single:.0f} events/s"),
        Figure("batched / one per request", f"{ratio:.1f}×", f"≥ {RATIO_TARGET:g}×",
               ratio >= RATIO_TARGET),
        Figure("press → accepted by the platform", p50_p99(presses),
               f"p50 ≤ {PRESS_P50_TARGET_S * 1000:g} ms",
               statistics.median(presses) <= PRESS_P50_TARGET_S),
    ]


if __name__ == "__main__":
    sys.exit(bench_main(parse, run))
