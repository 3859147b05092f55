"""`edge-alarm demo`: a simulated school gate, start to end, on this computer.

The real daemon code (build_daemon with its SMS, camera and uplink workers, the control
socket) runs against simulated parts: gpiozero's MockFactory pins, the emulated GSM modem
on a pty, the test-pattern camera and the stand-in platform on 127.0.0.1. A FakeClock gives
the time of day and moves the timers that would take minutes (held-open alert, SMS
fallback, heartbeat), so the story takes seconds.

Every line of the timeline reports something observed: an event read back from the store,
an SMS the emulated modem decoded, a request the stand-in platform received, the siren
relay as the daemon's status reads it. A step that does not happen ends the demo with
exit status 1 and says which. Everything is written into one temporary directory that is
removed at the end, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from edge import config as config_mod
from edge.clock import FakeClock
from edge.control import ControlServer, daemon_handlers, request
from edge.errors import EdgeAlarmError
from edge.events import Event
from edge.modem.emulator import ModemEmulator, SentSms
from edge.platform_stub import EVENTS_PATH, PlatformStub
from edge.routing import UPLINK
from edge.sdnotify import Notifier
from edge.service import build_daemon
from edge.sms import same_number
from edge.sms_text import FALLBACK_NOTE, REASON_WORDS
from edge.store import Store

TEMP_PREFIX = "edge-alarm-demo-"
PRINCIPAL = "+8613800138000"
SITE_TZ = "Asia/Shanghai"
HELD_OPEN_ALERT_S = 300
SMS_FALLBACK_AFTER_S = 20
PRE_TRIGGER_S = 3
STEP_TIMEOUT_S = 10.0   # real seconds any one expected step may take
# Real seconds before each scene: time to read, and for the camera's pre-trigger ring to
# fill with the seconds before the alarm.
SCENE_PAUSE_S = 1.5
# A Unix socket path longer than this does not fit in sockaddr_un on every system.
MAX_SOCKET_PATH = 100
BOX_WIDTH = 78          # terminal columns of an SMS as the phone shows it
# Punctuation that stays on the line it ends rather than start the next one.
CLOSING_PUNCTUATION = "。，、；：！？）」』】"

CONFIG_TEMPLATE = """\
# The demo's school gate: simulated pins, emulated modem, test-pattern camera and a
# stand-in platform, all on this computer. Written by `edge-alarm demo`, removed with it.
[site]
name = "高山小学"
device_id = "gaoshan-gate-1"
timezone = "{tz}"

[storage]
path = {storage}

[gpio]
pin_factory = "mock"

[[panic_button]]
name = "guard_room"
label = "门卫室一键报警"
pin = 17
active_low = true

[[gate]]
name = "main_gate"
label = "校门"
pin = 27
open_when = "high"
held_open_alert_s = {held_open}
debounce_s = 0.3
open_hours = ["06:30-08:30", "11:00-13:30", "15:30-18:30"]
open_days = ["mon", "tue", "wed", "thu", "fri"]

[[tamper]]
name = "box"
label = "报警主机防拆"
pin = 5

[siren]
pin = 22
max_on_s = 180

[camera]
backend = "test-pattern"
pre_trigger_s = {pre_trigger}

[modem]
port = {modem_port}

[uplink]
url = {url}
token_file = {token_file}
sms_fallback_after_s = {fallback}
heartbeat_s = 300

[[contact]]
name = "principal"
phone = "{principal}"
receives = ["panic", "gate_after_hours", "gate_held_open", "tamper", "fault"]
may_command = true

[control]
socket = {socket}
"""


class StepMissing(EdgeAlarmError, RuntimeError):
    """An expected step of the scenario did not happen."""


# ====================================================================== the timeline

def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` terminal columns (a CJK character takes two)."""
    lines, line, used = [], "", 0
    for char in text:
        w = _display_width(char)
        if used + w > width and char not in CLOSING_PUNCTUATION:
            lines.append(line)
            line, used = "", 0
        line += char
        used += w
    return lines + [line] if line or not lines else lines


class Timeline:
    def __init__(self, out, tz, pause_s: float):
        self.out = out
        self.tz = tz
        self.pause_s = pause_s

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def scene(self, title: str) -> None:
        time.sleep(self.pause_s)
        self.say()
        self.say(title)

    def at(self, when: dt.datetime, text: str) -> None:
        self.say(f"  {when.astimezone(self.tz):%H:%M:%S}  {text}")

    def note(self, text: str) -> None:
        self.say(f"            {text}")

    def sms(self, heading: str, text: str, parts: int = 1) -> None:
        if parts > 1:
            heading += f" ({parts} 条拼接 parts)"
        top = f"  ┌─ {heading} "
        self.say(top + "─" * max(4, BOX_WIDTH - _display_width(top)))
        for line in _wrap(text, BOX_WIDTH - 4):
            self.say(f"  │ {line}")
        self.say("  └" + "─" * (BOX_WIDTH - 3))


# What each kind of event means, in the timeline's words; fields from the event's data.
EVENT_WORDS = {
    "heartbeat": "心跳 heartbeat (uptime {uptime_s} s)",
    "gate_open": "{label}打开 gate opened",
    "gate_closed": "{label}关闭 gate closed",
    "gate_after_hours": "!! 非开放时段开门 {label} — opened outside open hours/days",
    "gate_held_open": "!! {label}超时未关 — open longer than {held_open_alert_s} s",
    "panic": "!!! 紧急报警 {label} — panic button pressed",
    "tamper": "!! 防拆报警 {label} — enclosure opened",
    "silenced": "报警已解除 {label} — silenced by {by} via {via}",
    "acknowledged": "报警已知悉 {label} — acknowledged by {by} via {via}; the siren sounds on",
    "fault": "设备故障 {label}（{reason_words}）— fault: {subject} {reason}",
    "recovered": "故障恢复 {label} — {subject} recovered",
}


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def describe(event: Event) -> str:
    """An event in words: Chinese for the school, a short English gloss for everyone."""
    reason = event.data.get("reason", "")
    fields = _Fields(event.data, subject=event.subject,
                     reason_words=REASON_WORDS.get(reason, reason))
    fields.setdefault("label", event.subject)
    words = EVENT_WORDS.get(event.kind, "{label}").format_map(fields)
    return f"#{event.seq} {event.kind}  {words}"


class Inbox:
    """The principal's phone: the emulated modem's sent PDUs, joined into messages."""

    def __init__(self, emulator: ModemEmulator):
        self.emulator = emulator
        self.shown = 0

    def messages(self) -> list[tuple[str, str, int]]:
        """(number, text, parts) of every complete message, in the order sent."""
        done: list[tuple[str, str, int]] = []
        partial: dict[tuple[str, int, int], dict[int, SentSms]] = {}
        for sms in self.emulator.sent:
            if sms.concat is None:
                done.append((sms.number, sms.text, 1))
                continue
            reference, total, index = sms.concat
            parts: dict[int, SentSms] = partial.setdefault((sms.number, reference, total), {})
            parts[index] = sms
            if len(parts) == total:
                del partial[(sms.number, reference, total)]
                done.append((sms.number, "".join(parts[k].text for k in sorted(parts)), total))
        return done

    def unseen(self) -> list[tuple[str, str, int]]:
        return self.messages()[self.shown:]

    def mark_seen(self) -> list[tuple[str, str, int]]:
        new = self.unseen()
        self.shown += len(new)
        return new


# ====================================================================== the rig

class Rig:
    """The simulated gate, in one temporary directory: config, token, store, control socket,
    the modem's pty link and the daemon log all live there."""

    def __init__(self, stack: contextlib.ExitStack, start: dt.datetime, log_tail: list[str]):
        """Everything started is registered on ``stack`` to be stopped; the daemon log's
        last lines are put in ``log_tail`` just before the directory goes."""
        self.dir = _make_workdir()
        stack.callback(shutil.rmtree, self.dir, ignore_errors=True)
        self.log_path = self.dir / "daemon.log"
        stack.callback(lambda: log_tail.extend(_tail(self.log_path)))
        _log_to(self.log_path, stack)
        self.tz = start.tzinfo
        self.clock = FakeClock(start.astimezone(dt.timezone.utc))

        token = secrets.token_hex(16)
        token_file = self.dir / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")

        self.platform = PlatformStub(token=token).start()
        stack.callback(self.platform.stop)
        # The emulator's port link goes in our directory too.
        self.modem = ModemEmulator(operator="CHINA MOBILE", signal=20, dir=str(self.dir))
        self.modem.start()
        stack.callback(self.modem.close)

        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(CONFIG_TEMPLATE.format(
            tz=SITE_TZ, storage=_toml(self.dir / "var"), held_open=HELD_OPEN_ALERT_S,
            pre_trigger=PRE_TRIGGER_S, modem_port=_toml(self.modem.port),
            url=_toml(self.platform.url), token_file=_toml(token_file),
            fallback=SMS_FALLBACK_AFTER_S, principal=PRINCIPAL,
            socket=_toml(self.dir / "control.sock")), encoding="utf-8")
        self.cfg = config_mod.load(str(self.config_path))
        self.socket = self.cfg.control.socket

        self.daemon = build_daemon(self.cfg, clock=self.clock, notifier=Notifier(environ={}))
        self._server = ControlServer(self.socket, daemon_handlers(self.daemon))
        self._ready = threading.Event()
        self._crash: list[BaseException] = []
        self._owner = threading.Thread(target=self._run_owner, name="owner", daemon=True)
        self._owner.start()
        stack.callback(self._stop_owner)
        self.wait(lambda: self._ready.is_set() or self._crash, "the daemon starting")
        if self._crash:
            raise StepMissing(f"the daemon did not start: {self._crash[0]}")
        self.store = Store(self.cfg.storage.db_path)  # our own reader connection
        stack.callback(self.store.close)

    def _run_owner(self) -> None:
        def ready():
            self._server.start()
            self._ready.set()
        try:
            self.daemon.run(on_ready=ready)
        except BaseException as e:  # reported by the main thread
            self._crash.append(e)
        finally:
            self._server.close()
            self.daemon.close()

    def _stop_owner(self) -> None:
        self.daemon.request_stop()
        self._owner.join(10)

    # ---------------------------------------------------------------- driving

    def sim(self, name: str, on: bool) -> None:
        """As `edge-alarm sim NAME on|off`, through the control socket."""
        request(self.socket, "sim", {"input": name, "state": "on" if on else "off"})

    def status(self) -> dict:
        """As `edge-alarm status`, through the control socket."""
        return request(self.socket, "status")

    def status_when(self, condition: Callable[[dict], object]) -> dict | None:
        status = self.status()
        return status if condition(status) else None

    def now(self) -> dt.datetime:
        return self.clock.now().astimezone(self.tz)

    def advance(self, seconds: float) -> None:
        """Fast-forward: move the clock, then wake the owner loop and every worker, since
        each computes its next deadline from the daemon's clock."""
        self.clock.advance(seconds)
        self.daemon.loop.post(lambda: None)
        for worker in self.daemon.workers:
            worker.wake()

    def advance_to(self, when: dt.datetime) -> None:
        self.advance(max(0.0, (when - self.clock.now()).total_seconds()))

    def debounce(self) -> None:
        """Let a gate's new level hold for its debounce_s."""
        gate = self.cfg.input("main_gate")
        assert gate is not None  # the demo's site has it
        self.advance(gate.debounce_s + 0.05)

    def wait(self, predicate: Callable[[], object], what: str,
             timeout: float = STEP_TIMEOUT_S):
        """The predicate's truthy result, polled; StepMissing naming ``what`` if none came."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self._crash:
                raise StepMissing(f"the daemon stopped: {self._crash[0]}")
            if time.monotonic() >= deadline:
                raise StepMissing(f"{what} (waited {timeout:.0f} s)")
            time.sleep(0.02)

    # ---------------------------------------------------------------- observing

    def events_after(self, seq: int) -> list[Event]:
        return self.store.events(after_seq=seq)

    def stored(self, kind: str, after_seq: int) -> Event | None:
        return next((e for e in self.events_after(after_seq) if e.kind == kind), None)

    def received(self, event: Event) -> bool:
        return any(r.id == event.id for r in self.platform.events)

    def pending(self) -> list:
        return self.store.pending_deliveries(UPLINK, 1000)

    def uplink_has_failed(self) -> bool:
        """The oldest event owed to the platform has been tried at least once."""
        rows = self.pending()
        return bool(rows) and rows[0][1] >= 1

    def drained(self) -> bool:
        """Whether every event reached the platform and the uplink is no longer failing;
        if not, fast-forward to the uplink's next retry."""
        status = self.status()
        if status["uplink"]["pending"] == 0 and "uplink" not in status["faults"]:
            return True
        rows = self.pending()
        if rows and rows[0][2] > self.clock.now().timestamp():
            self.advance(rows[0][2] - self.clock.now().timestamp() + 0.1)
        return False

    def settled(self) -> bool:
        """Nothing due is left undone: no SMS due unsent, and the uplink has tried every
        event whose retry time has come (it then waits for a later time)."""
        now = self.clock.now().timestamp()
        if self.store.due_sms(now):
            return False
        rows = self.pending()
        return not rows or rows[0][2] > now


def _make_workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    if len(str(path / "control.sock")) > MAX_SOCKET_PATH:  # a long $TMPDIR
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp"))
    return path


def _log_to(path: Path, stack: contextlib.ExitStack) -> None:
    """The daemon's log goes to a file in the demo's directory, not into the timeline."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def restore():
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
    stack.callback(restore)


def _toml(value) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def _jpeg_size(data: bytes) -> str:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
        return f"{image.width}×{image.height}"


def _kb(data: bytes) -> str:
    return f"{len(data) / 1024:.1f} KB"


def _last_weekday(today: dt.date) -> dt.date:
    while today.weekday() >= 5:
        today -= dt.timedelta(days=1)
    return today


# ====================================================================== the story

class Story:
    def __init__(self, rig: Rig, timeline: Timeline):
        self.rig = rig
        self.timeline = timeline
        self.cfg = rig.cfg
        self.inbox = Inbox(rig.modem)
        self.shown_seq = 0
        self.replies = 0  # SMS the principal sent to the device
        self.gate_opened: Event | None = None  # the after-hours opening, held open later
        self.received_before_outage = 0
        self.backlog: list[int] = []  # seqs pending when the platform comes back

    # ---------------------------------------------------------------- what is shown

    def show_events(self) -> list[Event]:
        """Every event stored since the last shown, each with what the platform made of it."""
        new = self.rig.events_after(self.shown_seq)
        for event in new:
            where = "↑ 平台已接收 uploaded" if self.rig.received(event) else \
                "… 未上传 not uploaded yet"
            self.timeline.at(event.time, f"{describe(event)}   {where}")
            self.shown_seq = event.seq
        return new

    def show_sms(self) -> list[str]:
        texts = []
        for number, text, parts in self.inbox.mark_seen():
            contact = next((c.name for c in self.cfg.contacts if same_number(c.phone, number)),
                           "?")
            self.timeline.sms(f"短信 SMS to {contact} {number}", text, parts)
            texts.append(text)
        return texts

    def wait_sms(self, words: str, what: str) -> None:
        self.rig.wait(lambda: any(words in text for _, text, _ in self.inbox.unseen()), what)

    def wait_event(self, kind: str, what: str) -> Event:
        return self.rig.wait(lambda: self.rig.stored(kind, self.shown_seq), what)

    def wait_uploaded(self, event: Event) -> None:
        self.rig.wait(lambda: self.rig.received(event),
                      f"the platform receiving #{event.seq} {event.kind}")

    def move_gate(self, to_open: bool) -> Event:
        """Open or close the gate (past its debounce); the event that records it."""
        self.rig.sim("main_gate", to_open)
        self.rig.debounce()
        kind = "gate_open" if to_open else "gate_closed"
        return self.wait_event(kind, f"{kind} after the gate was "
                                     f"{'opened' if to_open else 'closed'} at "
                                     f"{self.rig.now():%H:%M}")

    def show_pictures(self, event: Event) -> None:
        """The snapshot and pre-trigger frames the platform received for ``event``."""
        rig = self.rig

        def attached():
            stored = rig.store.event(event.seq)
            return stored if stored is not None and "snapshot_sha256" in stored.data else None

        stored = rig.wait(attached, f"a snapshot attached to #{event.seq} {event.kind}")
        snapshot = rig.wait(lambda: rig.platform.snapshots.get(event.id),
                            f"the platform receiving the snapshot of #{event.seq}")
        sha = hashlib.sha256(snapshot).hexdigest()
        doc = next(r.document for r in rig.platform.events if r.id == event.id)
        if not sha == stored.data["snapshot_sha256"] == doc["data"].get("snapshot_sha256"):
            raise StepMissing(f"the snapshot of #{event.seq} on the platform matching the "
                              "snapshot_sha256 of its event")
        self.timeline.note(f"↑ 抓拍 snapshot: {_jpeg_size(snapshot)} JPEG, {_kb(snapshot)}, "
                    f"sha256 {sha[:12]}… (= the event's snapshot_sha256)")
        expected = stored.data.get("frames", 0)
        if not expected:
            return

        def all_frames():
            frames = rig.platform.frames.get(event.id, {})
            return frames if len(frames) >= expected else None

        frames = rig.wait(all_frames, f"the platform receiving {expected} pre-trigger "
                                      f"frames of #{event.seq}")
        sizes = ", ".join(_kb(frames[k]) for k in sorted(frames))
        self.timeline.note(f"↑ 报警前画面 pre-trigger frames: {len(frames)} × "
                    f"{_jpeg_size(frames[1])} JPEG ({sizes})")

    def show_status(self, status: dict) -> None:
        alarm, up, modem = status["alarm"], status["uplink"], status["modem"]
        self.timeline.at(self.rig.now(), "edge-alarm status:")
        active = "ACTIVE " + ", ".join(alarm["inputs"]) if alarm["active"] else "无 none"
        self.timeline.note(f"报警 alarm: {active} · 警号 siren: "
                    f"{'ON' if status['siren']['on'] else 'off'} · 短信模块 modem: "
                    f"{'ok' if modem.get('ok') else 'FAULT'}, signal {modem.get('signal')}")
        self.timeline.note(f"平台 uplink: {'ok' if up.get('ok') else 'FAULT'}, "
                    f"待上传 {up['pending']} pending · 故障 faults: "
                    f"{', '.join(status['faults']) or '无 none'}")

    # ---------------------------------------------------------------- the scenes

    def start(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene(f"◎ 启动 start-up — {rig.now():%Y-%m-%d %a}")
        status = rig.wait(lambda: rig.status_when(lambda s: s["modem"].get("ok")),
                          "the modem becoming ready (SIM, network, signal)")
        t.at(rig.now(), f"设备上线 device up: 短信模块 modem ok (signal "
                        f"{status['modem'].get('signal')}, {status['modem'].get('operator')}), "
                        f"camera {status.get('camera', {}).get('backend')}, "
                        f"{len(status['inputs'])} inputs")
        heartbeat = self.wait_event("heartbeat", "the start-up heartbeat")
        self.wait_uploaded(heartbeat)
        self.show_events()

    def school_hours_gate(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("① 07:40 上学时段，校门打开 — the gate opens during school hours")
        rig.advance_to(rig.now().replace(hour=7, minute=40, second=0))
        opened = self.move_gate(to_open=True)
        self.wait_uploaded(opened)
        self.show_events()
        if rig.store.sms_rows(opened.seq):
            raise StepMissing("no SMS for an opening in school hours")
        t.note("短信 SMS: 无 none — an opening in open hours is logged, nobody is woken")
        rig.advance_to(rig.now().replace(minute=41, second=0))
        self.wait_uploaded(self.move_gate(to_open=False))
        self.show_events()

    def after_hours_gate(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("② 21:10 放学后，校门被打开 — the gate opens after hours")
        rig.clock.cut_to(rig.now().replace(hour=21, minute=10, second=0))
        t.say("            (… 快进到晚上 skipping to the evening …)")
        self.move_gate(to_open=True)
        alert = self.wait_event("gate_after_hours", "gate_after_hours for an opening at 21:10")
        self.wait_sms("非开放时段开门", "the after-hours SMS to the principal")
        self.wait_uploaded(alert)
        self.show_events()
        self.show_pictures(alert)
        self.show_sms()
        if rig.status()["inputs"]["main_gate"]["open"]:
            t.note("(校门仍开着 the gate stays open)")
        self.gate_opened = alert

    def panic(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("③ 21:12 门卫按下一键报警 — the guard presses the panic button")
        rig.advance_to(rig.now().replace(minute=12, second=5))
        rig.sim("guard_room", True)
        rig.wait(lambda: rig.status()["siren"]["on"], "the siren sounding")
        assert self.cfg.siren is not None  # the demo's site has one
        t.at(rig.now(), f"警号 siren: ON (继电器 relay on GPIO{self.cfg.siren.pin})")
        rig.sim("guard_room", False)  # the button springs back; the alarm stays latched
        alarm = self.wait_event("panic", "a panic event for the press")
        self.wait_sms("紧急报警", "the panic SMS to the principal")
        self.wait_uploaded(alarm)
        self.show_events()
        self.show_pictures(alarm)
        self.show_sms()
        if not rig.status()["alarm"]["active"]:
            raise StepMissing("the alarm staying latched after the button was released")
        t.note("按钮已松开，报警保持 button released; the alarm stays latched until silenced")

    def principal_replies(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("④ 21:12 校长回复“收到”，再回复“解除” — the principal replies by SMS")
        self.principal_sends("收到", second=45)
        self.wait_event("acknowledged", "an acknowledged event after the principal's 收到")
        self.wait_sms("已记录您知悉", "the reply SMS confirming the acknowledgement")
        self.show_events()
        if not rig.status()["siren"]["on"]:
            raise StepMissing("the siren sounding on after 收到 (it only acknowledges)")
        t.at(rig.now(), "警号 siren: still ON (收到 only acknowledges)")
        self.show_sms()
        self.principal_sends("解除", second=55)
        self.wait_event("silenced", "a silenced event after the principal's 解除")
        rig.wait(lambda: not rig.status()["siren"]["on"], "the siren stopping")
        self.wait_sms("已解除", "the reply SMS confirming the silence")
        self.show_events()
        t.at(rig.now(), "警号 siren: off")
        self.show_sms()

    def principal_sends(self, text: str, *, second: int) -> None:
        rig = self.rig
        rig.advance_to(rig.now().replace(minute=12, second=second))
        self.timeline.sms(f"短信 SMS from principal {PRINCIPAL}", text)
        rig.modem.deliver(PRINCIPAL, text, timestamp=rig.now())
        self.replies += 1

    def platform_down(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("⑤ 21:13 县平台断线 — the county platform goes down")
        rig.advance_to(rig.now().replace(minute=13, second=15))
        rig.platform.stop()
        self.received_before_outage = len(rig.platform.events)
        t.at(rig.now(), "平台不可达 platform unreachable (the stand-in refuses connections)")
        assert self.gate_opened is not None  # the after-hours scene came first
        held_at = self.gate_opened.time + dt.timedelta(seconds=HELD_OPEN_ALERT_S)
        rig.advance_to(held_at)
        held = self.wait_event("gate_held_open", f"gate_held_open {HELD_OPEN_ALERT_S} s "
                                                 "after the gate opened")
        rig.wait(rig.uplink_has_failed, "the uplink trying the platform and failing")
        self.show_events()
        waiting = [r for r in rig.store.sms_rows(held.seq) if r["state"] == "waiting"]
        if not waiting:
            raise StepMissing("a fallback SMS waiting for the platform to take gate_held_open")
        t.note(f"gate_held_open 不是即时短信 not an immediate kind: SMS only if the platform "
               f"has not taken it within sms_fallback_after_s = {SMS_FALLBACK_AFTER_S} s")
        # Step through the fallback delay as the workers would live through it: each retry
        # of the uplink and each SMS that falls due happens at its own time.
        end = held_at + dt.timedelta(seconds=SMS_FALLBACK_AFTER_S + 15)
        while rig.clock.now() < end:
            rig.advance(min(5.0, (end - rig.clock.now()).total_seconds()))
            with contextlib.suppress(StepMissing):
                rig.wait(rig.settled, "the workers settling", timeout=3)
        self.wait_sms(FALLBACK_NOTE, "the gate_held_open SMS sent by fallback")
        self.show_events()
        texts = self.show_sms()
        if not any("门未关闭" in text and FALLBACK_NOTE in text for text in texts):
            raise StepMissing("the gate_held_open SMS with the platform-unreachable note")
        rig.advance_to(rig.now().replace(minute=16, second=0))
        self.move_gate(to_open=False)
        self.show_events()
        self.show_sms()
        status = rig.status()
        if status["uplink"]["pending"] < 2:
            raise StepMissing("events piling up while the platform is down")
        self.show_status(status)
        self.backlog = [row[0].seq for row in rig.pending()]

    def platform_returns(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("⑥ 21:17 平台恢复 — the platform comes back")
        requests_before = len(rig.platform.requests)
        rig.platform.start()
        rig.advance_to(rig.now().replace(minute=17, second=0))
        t.at(rig.now(), "平台恢复 platform reachable again")
        rig.wait(rig.drained, "the backlog draining and the uplink recovering")
        # A document without a sequence (0: no seq of ours) fails the check below.
        seqs = [int(r.sequence or 0) for r in rig.platform.events[self.received_before_outage:]]
        if seqs[:len(self.backlog)] != self.backlog:
            raise StepMissing(f"the backlog {self.backlog} reaching the platform first, in "
                              f"seq order, each once (received: {seqs})")
        posts = [r for r in rig.platform.requests[requests_before:]
                 if r.method == "POST" and r.path == EVENTS_PATH and r.status == 200]
        batches = sum("batch" in r.headers.get("Content-Type", "") for r in posts)
        t.at(rig.now(), f"积压补传 backlog of {len(self.backlog)} delivered, in seq order: "
                        + " ".join(f"#{s}" for s in self.backlog))
        t.note(f"平台收到 received since the restart: {' '.join(f'#{s}' for s in seqs)} in "
               f"{len(posts)} POST request(s), {batches} of them a batch")
        self.show_events()
        self.show_sms()
        status = rig.status()
        self.show_status(status)
        if status["alarm"]["active"] or status["siren"]["on"] or status["faults"]:
            raise StepMissing("a clean status after the platform returned")

    def summary(self, elapsed: float) -> None:
        rig, t = self.rig, self.timeline
        t.scene("小结 summary")
        created = rig.store.last_seq()
        received = rig.platform.events
        seqs = [int(r.sequence or 0) for r in received]  # 0: none, as above
        if seqs != list(range(1, created + 1)):
            raise StepMissing(f"each of the {created} events reaching the platform once, "
                              f"in seq order (received: {seqs})")
        kinds = Counter(r.type.rsplit(".", 1)[1] for r in received)
        t.say(f"  事件 events: {created} created; the platform received all {len(received)}, "
              "once each, in seq order")
        t.say("    " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
        frames = sum(len(f) for f in rig.platform.frames.values())
        t.say(f"  图片 pictures uploaded: {len(rig.platform.snapshots)} snapshots, "
              f"{frames} pre-trigger frames")
        t.say(f"  短信 SMS: {len(self.inbox.messages())} sent to the principal "
              f"({len(rig.modem.sent)} PDUs), {self.replies} received from the principal")
        t.say(f"✓ 演示完成 demo complete in {elapsed:.1f} s")


# ====================================================================== entry point

def run_demo(out=sys.stdout, *, pause_s: float = SCENE_PAUSE_S) -> int:
    began = time.monotonic()
    tz = ZoneInfo(SITE_TZ)
    start = dt.datetime.combine(_last_weekday(dt.datetime.now(tz).date()),
                                dt.time(7, 39, 50), tzinfo=tz)
    timeline = Timeline(out, tz, pause_s)
    timeline.say("edge-alarm 演示 demo · 高山小学 (gaoshan-gate-1, Asia/Shanghai)")
    timeline.say("Simulated on this computer: the real daemon code with simulated GPIO pins, "
                 "an emulated GSM modem,")
    timeline.say("a test-pattern camera and a stand-in county platform on 127.0.0.1. "
                 "The clock is fast-forwarded.")
    log_tail: list[str] = []
    with _sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        try:
            rig = Rig(stack, start, log_tail)
            timeline.say(f"All files are in {rig.dir} (removed at the end). While it runs:")
            timeline.say(f"    edge-alarm status -c {rig.config_path}")
            story = Story(rig, timeline)
            story.start()
            story.school_hours_gate()
            story.after_hours_gate()
            story.panic()
            story.principal_replies()
            story.platform_down()
            story.platform_returns()
            story.summary(time.monotonic() - began)
            return 0
        except EdgeAlarmError as e:  # StepMissing, or a part that refused to work
            timeline.say()
            timeline.say(f"✗ 没有发生 did not happen: {e}")
        except KeyboardInterrupt:
            timeline.say()
            timeline.say("interrupted; cleaning up")
            return 130
    print("--- the daemon's log, last lines ---", file=sys.stderr)
    print("\n".join(log_tail), file=sys.stderr)
    return 1


def _tail(path: Path, lines: int = 40) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM cleans up as Ctrl-C does (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)
