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
import signal
import sys
import threading
import time
from collections import Counter
from zoneinfo import ZoneInfo

from edge.indicator import LAMP_CHECK_S
from edge.demo_rig import (CALL_AFTER_S, HELD_OPEN_ALERT_S, LAMP_PIN, PRINCIPAL,
                           SMS_FALLBACK_AFTER_S, Rig, StepMissing)
from edge.demo_timeline import Inbox, Timeline, describe
from edge.errors import EdgeAlarmError
from edge.events import Event
from edge.sim.platform import EVENTS_PATH
from edge.sim.site import SITE_TZ
from edge.sms import same_number
from edge.sms_text import FALLBACK_NOTE

# Real seconds before each scene: time to read, and for the camera's pre-trigger ring to
# fill with the seconds before the alarm.
SCENE_PAUSE_S = 1.5


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

    def show_alert(self, alert: Event, sms_words: str, sms_what: str) -> None:
        """An alert once its SMS (with ``sms_words``) went and the platform took it: the
        events, the pictures the platform received, the SMS."""
        self.wait_sms(sms_words, sms_what)
        self.wait_uploaded(alert)
        self.show_events()
        self.show_pictures(alert)
        self.show_sms()

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
        self.show_alert(alert, "非开放时段开门", "the after-hours SMS to the principal")
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
        if rig.status()["indicator"] != "blinking":
            raise StepMissing("the guard's lamp blinking while the alarm is not yet delivered")
        t.at(rig.now(), f"警示灯 guard's lamp (GPIO{LAMP_PIN}): 闪烁 blinking — 报警尚未送达 "
                        "not yet delivered anywhere")
        rig.sim("guard_room", False)  # the button springs back; the alarm stays latched
        alarm = self.wait_event("panic", "a panic event for the press")
        self.show_alert(alarm, "紧急报警", "the panic SMS to the principal")
        rig.advance(LAMP_CHECK_S)
        rig.wait(lambda: rig.status()["indicator"] == "steady",
                 "the guard's lamp steady once the alarm was delivered")
        t.at(rig.now(), "警示灯 guard's lamp: 常亮 steady — 平台和短信已送达 the alarm got through")
        if not rig.status()["alarm"]["active"]:
            raise StepMissing("the alarm staying latched after the button was released")
        t.note("按钮已松开，报警保持 button released; the alarm stays latched until silenced")
        rig.advance(CALL_AFTER_S)
        rig.wait(lambda: rig.modem.ringing, "the escalation call ringing the principal")
        t.at(rig.now(), f"电话 call: ATD{PRINCIPAL}; — {CALL_AFTER_S} s without "
                        "acknowledgement, the principal's phone rings")

    def principal_replies(self) -> None:
        rig, t = self.rig, self.timeline
        t.scene("④ 21:12 校长回复“收到”，再回复“解除” — the principal replies by SMS")
        self.principal_sends("收到", second=45)
        self.wait_event("acknowledged", "an acknowledged event after the principal's 收到")
        self.wait_event("call", "the escalation call hung up after the principal's 收到")
        rig.wait(lambda: not rig.modem.ringing, "the call hung up")
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
        self.backlog = [row.event.seq for row in rig.pending()]

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