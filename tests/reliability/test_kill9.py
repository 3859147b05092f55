"""kill -9 at random moments, again and again, during mixed traffic: a real `edge-alarm run`
on mock pins is started and killed EDGE_KILL9_ROUNDS times (200 by default; 1,000 for the
manual run of the README), while presses, silences and gate toggles go to it through the
control socket, the stand-in platform goes down, drops answers and answers 503 or slowly,
and the emulated modem is slow. Each kill falls anywhere from the start of the process to a
little after it answers (during start-up, a commit, an upload, an SMS).

After the last round one more daemon drains what is owed, and then:
  - every event in the store, every event a `silence` answered and every press a `status`
    showed latched reached the platform;
  - no id reached it as two different documents, and no `sequence` of one store under two ids;
  - each (panic, contact) got its SMS, a second copy only in the documented windows: the
    process was killed after the network took the first copy and before it was recorded
    (the copy was the last SMS that process sent), or the first copy's confirmation was
    lost (the second is marked （重发）);
  - each restart restored what the store held when the process before it was killed: the
    latched alarm, and the siren on exactly while its max_on_s has not run out.
The seed is printed (and named in every failure): EDGE_KILL9_SEED=N repeats the schedule."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from reliability._crash_rig import (DEPUTY, PRINCIPAL, crash_site, event_sms_time, owed_sms,
                                    quarantined, sms_time, stored_events)
from conftest import PLATFORM_TOKEN, _child_env, cloudevent_problems, start_daemon, stop_daemon
from edge.control import request
from edge.errors import EdgeAlarmError
from edge.events import Event
from edge.sim.modem import ModemEmulator
from edge.sim.platform import PlatformStub
from edge.sms_text import RESENT_NOTE

pytestmark = pytest.mark.reliability

ROUNDS = int(os.environ.get("EDGE_KILL9_ROUNDS", "200"))
SEED = int(os.environ.get("EDGE_KILL9_SEED") or random.randrange(2 ** 32))
MAX_ON_S = 2          # the siren's max_on_s: short, so restarts see it both running and out
ALIVE_S = 0.3         # a kill comes at most this long after the process usually answers
SIREN_MARGIN_S = 0.5  # around the siren's end, its state is not judged
DRAIN_S = 120.0  # the last daemon's time to deliver everything (upload backoff included)
REQUEST_S = 2.0


class SessionModem(ModemEmulator):
    """The emulated modem, noting which daemon process sent each SMS. It reads the pty in
    order and each process opens its session with ATE0 (Modem.init), so the number of ATE0
    seen before an SMS names the process that sent it."""

    def __init__(self, **options):
        super().__init__(**options)
        self.sessions = 0
        self.sent_session: list[int] = []  # per SMS in ``sent``: its process's session

    def _take_command(self, line, stop):
        if line == "ATE0":
            self.sessions += 1
        super()._take_command(line, stop)

    def _record(self, pdu, length):
        reference = super()._record(pdu, length)
        self.sent_session.append(self.sessions)
        return reference


def latched_alarms(events: list[Event]) -> list[Event]:
    """The alarms a store holds latched: raised and not silenced."""
    silenced = {e.data.get("alarm_id") for e in events if e.kind == "silenced"}
    return [e for e in events if e.kind in ("panic", "tamper") and e.id not in silenced]


class KillRun:
    """The rounds, the traffic and the flapping platform; what each found wrong."""

    def __init__(self, config: Path, socket: Path, log: Path, modem: SessionModem,
                 platform: PlatformStub):
        self.config, self.socket, self.log = config, socket, log
        self.db = config.parent / "var" / "events.db"
        self.modem, self.platform = modem, platform
        self.rng = random.Random(SEED)
        self.round = -1
        self.spawned: dict[int, float] = {}
        self.expected: dict[int, list[Event]] = {}  # latched in the store before the round
        self.answered: dict[int, float] = {}        # round → seconds from spawn to status
        self.ready_s = 0.5  # how long a process takes to answer, as the rounds find it
        self.problems: list[str] = []
        self.confirmed_ids: set[str] = set()        # committed, as `silence` answered
        self.confirmed_presses: set[str] = set()    # alarm.since of presses shown latched
        self.stopping = threading.Event()

    # -- the rounds (test thread) --------------------------------------------------------

    def run(self) -> None:
        threads = [threading.Thread(target=self._traffic, args=(random.Random(SEED + 1),),
                                    daemon=True),
                   threading.Thread(target=self._flap, args=(random.Random(SEED + 2),),
                                    daemon=True)]
        for thread in threads:
            thread.start()
        try:
            with open(self.log, "ab") as out:
                for n in range(ROUNDS):
                    self._one_round(n, out)
        finally:
            self.stopping.set()
            for thread in threads:
                thread.join(10)
            self.platform.start()

    def _kill_after(self) -> tuple[float, bool]:
        """When to kill, from the spawn: in three rounds of ten while the process starts
        (importing, opening and checking the store, restoring), else while it runs; and
        whether it was meant to be running by then."""
        if self.rng.random() < 0.3:
            return self.rng.uniform(0, self.ready_s), False
        return self.ready_s + self.rng.uniform(0, ALIVE_S), True

    def _learn_ready(self, n: int, meant_running: bool) -> None:
        """Follow the machine's load: a process that answered moves the estimate towards
        its time, one that should have answered and did not pushes it up."""
        if n in self.answered:
            self.ready_s = 0.8 * self.ready_s + 0.2 * self.answered[n]
        elif meant_running:
            self.ready_s *= 1.25

    def _one_round(self, n: int, out) -> None:
        self.expected[n] = latched_alarms(stored_events(self.db)) if self.db.exists() else []
        self.round = n
        self.spawned[n] = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "-c", str(self.config)],
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_child_env())
        kill_after, meant_running = self._kill_after()
        try:
            proc.wait(kill_after)
            pytest.fail(f"seed {SEED}, round {n}: edge-alarm run exited {proc.returncode} "
                        f"by itself:\n{self.log.read_text(errors='replace')[-3000:]}")
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        self._learn_ready(n, meant_running)

    # -- the traffic (its own thread) ----------------------------------------------------

    def _ask(self, n: int, cmd: str, args: dict | None = None):
        """The daemon of round ``n`` answering ``cmd``; None when it did not (killed, or
        not up yet) or when the answer may have come from a later round's."""
        if self.round != n:
            return None  # never act on a later round's daemon before its state is checked
        try:
            answer = request(self.socket, cmd, args, timeout=REQUEST_S)
        except (EdgeAlarmError, OSError):
            return None
        return answer if self.round == n else None

    def _traffic(self, rng: random.Random) -> None:
        while not self.stopping.is_set():
            n = self.round
            status = self._ask(n, "status")
            if status is None:
                time.sleep(0.005)
                continue
            if n not in self.answered:
                self.answered[n] = time.monotonic() - self.spawned[n]
                self._check_restored(n, status)
            self._act(n, status, rng)

    def _act(self, n: int, status: dict, rng: random.Random) -> None:
        latched = status["alarm"]["active"]
        choice = rng.random()
        if not latched and choice < 0.5:
            for state in ("on", "off"):
                if self._ask(n, "sim", {"input": "guard_room", "state": state}) is None:
                    return
            after = self._ask(n, "status")
            if after is not None and after["alarm"]["active"]:
                self.confirmed_presses.add(after["alarm"]["since"])
        elif latched and choice < 0.4:
            for event in self._ask(n, "silence", {"by": "kill9"}) or []:
                if event["seq"] > 0:  # committed (0: held in memory)
                    self.confirmed_ids.update((event["id"], event["data"]["alarm_id"]))
        else:
            gate_open = status["inputs"]["main_gate"]["active"]
            self._ask(n, "sim", {"input": "main_gate", "state": "off" if gate_open else "on"})
            time.sleep(0.06)  # past the debounce, so the change counts

    def _check_restored(self, n: int, status: dict) -> None:
        """The first answer of round ``n``: the alarm latched as the store held it, the
        siren on while the latched alarm's max_on_s has not run out, off after."""
        now = time.time()
        latched = self.expected[n]
        if status["alarm"]["active"] != bool(latched):
            self.problems.append(f"round {n}: alarm.active {status['alarm']['active']} after "
                                 f"a restart, the store holds {len(latched)} latched")
        left = max((e.ts + MAX_ON_S - now for e in latched), default=-MAX_ON_S)
        if left > SIREN_MARGIN_S and not status["siren"]["on"]:
            self.problems.append(f"round {n}: siren off after a restart, {left:.2f} s of its "
                                 "max_on_s left")
        if left < -SIREN_MARGIN_S and status["siren"]["on"]:
            self.problems.append(f"round {n}: siren on after a restart, its max_on_s ran "
                                 f"out {-left:.2f} s ago")

    # -- the platform (its own thread) ---------------------------------------------------

    def _flap(self, rng: random.Random) -> None:
        """Down for a moment, an answer lost, a 503, slow answers. A bad answer is ordered
        only while the daemon is sending (a request in the last 0.3 s), as a platform's
        trouble hits whoever sends at that time: ordered while it backs off, it would wait
        for its next try and fail every one (each failure doubles the backoff)."""
        platform, wait = self.platform, self.stopping.wait
        while not wait(rng.uniform(0.5, 2.0)):
            choice = rng.random()
            requests = platform.requests
            sending = requests and time.monotonic() - requests[-1].received_mono < 0.3
            if choice < 0.3:
                platform.stop()
                wait(rng.uniform(0.1, 0.4))
                platform.start()
            elif choice < 0.45 and sending:
                platform.lose_responses(1)
            elif choice < 0.6 and sending:
                platform.respond_with(503)
            elif choice >= 0.6:
                platform.set_delay(0.3)
                wait(rng.uniform(0.2, 0.6))
                platform.set_delay(0)

    # -- after the last round ------------------------------------------------------------

    def drain(self) -> None:
        """One more daemon, with the platform and the modem well, until nothing is owed."""
        self.platform.set_delay(0)
        self.modem.prompt_delay = self.modem.send_time = 0.0
        daemon = start_daemon(self.config, self.socket, self.log.with_name("drain.log"))
        try:
            deadline = time.monotonic() + DRAIN_S
            while True:
                status = self._ask(self.round, "status") or {}
                if status.get("uplink", {}).get("pending") == 0 and owed_sms(self.db) == 0:
                    break
                assert time.monotonic() < deadline, f"seed {SEED}: still owed after {DRAIN_S} s"
                time.sleep(0.1)
        finally:
            assert stop_daemon(daemon) == 0


def delivery_problems(run: KillRun, events: list[Event]) -> list[str]:
    platform = run.platform
    delivered = {e.id for e in platform.events}
    problems = [f"{e.kind} {e.id} (seq {e.seq}) never reached the platform"
                for e in events if e.id not in delivered]
    problems += [f"{i}, committed as `silence` answered, never reached the platform"
                 for i in sorted(run.confirmed_ids - delivered)]
    panics_by_second = {e.time.isoformat(timespec="seconds"): e for e in events
                        if e.kind == "panic"}
    for since in sorted(run.confirmed_presses):
        panic = panics_by_second.get(since)
        if panic is None or panic.id not in delivered:
            problems.append(f"the press latched at {since} is not stored and delivered")
    bodies: dict[str, set[str]] = defaultdict(set)
    for req in platform.requests:
        try:
            body = json.loads(req.body) if req.method == "POST" else []
        except ValueError:  # cut short by a kill: the platform refused it as not JSON
            continue
        for document in body if isinstance(body, list) else [body]:
            bodies[document["id"]].add(json.dumps(document, sort_keys=True))
    problems += [f"{i} was posted as {len(b)} different documents"
                 for i, b in bodies.items() if len(b) > 1]
    numbered: dict[tuple, set[str]] = defaultdict(set)
    for e in platform.events:
        numbered[(e.document["data"]["store_id"], e.sequence)].add(e.id)
    problems += [f"sequence {key[1]} of store {key[0]} names {len(ids)} events"
                 for key, ids in numbered.items() if len(ids) > 1]
    return problems


def sms_problems(run: KillRun, events: list[Event]) -> list[str]:
    modem = run.modem
    panics = {event_sms_time(e): e for e in events if e.kind == "panic"}
    problems = [] if len(panics) == sum(e.kind == "panic" for e in events) else [
        "two panics share a time to the microsecond: the SMS cannot name their events"]
    sent, sessions = modem.sent, modem.sent_session
    last_of_session = {session: index for index, session in enumerate(sessions)}
    copies: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, sms in enumerate(sent):
        when = sms_time(sms.text)
        if sms.concat is not None or when not in panics:
            problems.append(f"an SMS that names no stored panic: {sms.text!r}")
            continue
        copies[(when, sms.number)].append(index)
    for when, panic in panics.items():
        for contact in (PRINCIPAL, DEPUTY):
            indices = copies.get((when, contact.phone), [])
            if not indices:
                problems.append(f"panic {panic.id} at {when}: no SMS to {contact.name}")
            for first, again in zip(indices, indices[1:]):
                crash_window = (sessions[first] < sessions[again]
                                and last_of_session[sessions[first]] == first)
                if not (crash_window or RESENT_NOTE in sent[again].text):
                    problems.append(f"panic {panic.id} at {when}: SMS {first} and {again} to "
                                    f"{contact.name}, not in a crash window nor marked resent")
    return problems


def test_kill_9_at_random_moments_loses_nothing_and_restores_the_alarm(tmp_path, short_dir):
    print(f"\nkill -9: {ROUNDS} rounds, seed {SEED} (EDGE_KILL9_SEED={SEED} repeats it)")
    started = time.monotonic()
    with SessionModem() as modem, PlatformStub(token=PLATFORM_TOKEN,
                                               check_event=cloudevent_problems) as platform:
        modem.prompt_delay, modem.send_time = 0.1, 0.05  # a slow network
        config = crash_site(tmp_path, short_dir / "control.sock", modem=modem,
                            platform=platform, siren_max_on_s=MAX_ON_S,
                            sms_fallback_after_s=5)
        run = KillRun(config, short_dir / "control.sock", tmp_path / "daemon.log", modem,
                      platform)
        run.run()
        rounds_s = time.monotonic() - started
        run.drain()
        events = stored_events(run.db)
        problems = (run.problems + delivery_problems(run, events) + sms_problems(run, events)
                    + platform.invalid_events
                    + [f"moved aside as corrupt: {p}" for p in quarantined(run.db)])
    print(f"kill -9: {ROUNDS} kills ({len(run.answered)} after the daemon answered) in "
          f"{rounds_s:.0f} s, drained in {time.monotonic() - started - rounds_s:.0f} s; {len(events)} events stored, "
          f"{sum(e.kind == 'panic' for e in events)} panics, {len(modem.sent)} SMS, "
          f"{len(run.confirmed_presses)} presses and {len(run.confirmed_ids)} ids confirmed; "
          f"start to status {run.ready_s:.2f} s at the end")
    assert problems == [], f"seed {SEED}: " + "\n".join(problems[:40])
    assert len(run.answered) >= ROUNDS // 4, \
        f"seed {SEED}: only {len(run.answered)} of {ROUNDS} daemons answered before the kill"
