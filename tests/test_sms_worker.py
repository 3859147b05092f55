"""The SMS path end to end: a daemon on mock pins (in this process, or a real `edge-alarm
run`) with its SMS worker talking to the ModemEmulator through a real pty. What the
principal's phone would get is read back with Gammu's own decoder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from zoneinfo import ZoneInfo

import gammu
import pytest
from gpiozero.pins.mock import MockFactory

import edge.sms
import edge.sms_memory
import edge.sms_outgoing
from conftest import (SHORT_MODEM_TIMINGS, _child_env, edge_cli,
                      refuse_writes, start_daemon, stop_daemon)
from edge import config as config_mod
from edge.clock import Clock
from edge.control import ControlServer, daemon_handlers, request
from edge.errors import EdgeAlarmError
from edge.events import Event
from edge.service import WorkerOptions, build_daemon
from edge.sim.modem import ModemEmulator, SentSms
from edge.sim.site import Contact, SimSite
from edge.sms import SmsWorker, parse_command
from edge.sms_text import alert_text
from edge.store import Store

SHANGHAI = ZoneInfo("Asia/Shanghai")
PRINCIPAL = "+8613800138000"
DEPUTY = "+8613700137000"  # told of tampering only, may not command
STRANGER = "+8613912345678"
REPLY_HINT = "回复“解除”关闭警号，回复“收到”表示已知悉（警号继续鸣响）。"
PANIC_TEXT = "【高山小学】紧急报警：门卫室一键报警 于 {time} 触发。" + REPLY_HINT


def config_text(storage, sock, port, *, held_open_s: int = 300,
                principal_receives=("panic", "tamper", "gate_after_hours",
                                    "gate_held_open", "fault"),
                modem: str | None = "", sms: str = "", uplink: str = "") -> str:
    """The simulated school gate (edge.sim.site), its gate allowed at any hour and quick to
    settle, with an emulated modem: the principal commands, the deputy is only told of
    tampering. ``modem``/``sms``/``uplink``: TOML lines for those tables (no [modem] at all
    when ``modem`` is None; [uplink] only when given, with its url and token_file)."""
    uplink_keys = tomllib.loads(uplink)
    return SimSite(
        storage, sock, device_id="sms-test-1", school_hours=False,
        held_open_alert_s=held_open_s, debounce_s=0.05,
        modem_port=None if modem is None else port, modem_keys=tomllib.loads(modem or ""),
        platform_url=uplink_keys.pop("url", None), token_file=uplink_keys.pop("token_file", None),
        uplink_keys=uplink_keys, sms_keys=tomllib.loads(sms),
        contacts=[Contact("principal", PRINCIPAL, principal_receives, may_command=True),
                  Contact("deputy", DEPUTY, ["tamper"])]).text()


# --------------------------------------------------------------------------- helpers

def decoded(messages: list[SentSms]) -> str:
    """What the phone shows for the PDUs of one message: Gammu decodes every part,
    links them by their concatenation headers (in whatever order they came) and
    joins them."""
    parts = [gammu.DecodePDU(bytes.fromhex(m.pdu), True) for m in messages]
    if len(parts) == 1:
        return parts[0]["Text"]
    linked = gammu.LinkSMS([[part] for part in reversed(parts)])
    assert len(linked) == 1, "Gammu did not link the parts into one message"
    return gammu.DecodeSMS(linked[0])["Entries"][0]["Buffer"]


def texts_to(emulator: ModemEmulator, number: str) -> list[str]:
    """Every whole message sent to ``number``, in order, as the phone shows it."""
    out, pending = [], []
    for message in emulator.sent:
        if message.number != number:
            continue
        if message.concat is None:
            out.append(decoded([message]))
            continue
        pending.append(message)
        if message.concat[2] == message.concat[1]:  # the last part
            out.append(decoded(pending))
            pending = []
    return out


def stored_events(cfg, *kinds: str):
    reader = Store(cfg.storage.db_path)
    try:
        return [e for e in reader.events() if not kinds or e.kind in kinds]
    finally:
        reader.close()


def sms_rows(cfg, seq: int) -> list[dict]:
    reader = Store(cfg.storage.db_path)
    try:
        return reader.sms_rows(seq)
    finally:
        reader.close()


def sms_states(cfg, seq: int) -> dict[str, str]:
    return {r["contact"]: r["state"] for r in sms_rows(cfg, seq)}


def cmgs_issued(emulator: ModemEmulator) -> bool:
    return any(c.startswith("AT+CMGS=") for c in emulator.commands)


def local_hms(event) -> str:
    return event.time.astimezone(SHANGHAI).strftime("%H:%M:%S")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveDaemon:
    """build_daemon() on mock pins, its owner loop on a thread and its control socket up,
    as `edge-alarm run` has them; the SMS worker with short modem deadlines."""

    def __init__(self, cfg, clock: Clock | None = None):
        self.cfg = cfg
        self.daemon = build_daemon(cfg, pin_factory=MockFactory(), clock=clock,
                                   options=WorkerOptions(modem_timings=SHORT_MODEM_TIMINGS))
        self.sms = next(w for w in self.daemon.workers if isinstance(w, SmsWorker))
        self.server = ControlServer(cfg.control.socket, daemon_handlers(self.daemon))
        self.thread = threading.Thread(target=self.daemon.run,
                                       kwargs={"on_ready": self.server.start},
                                       name="owner", daemon=True)

    def start(self, wait_until, ready: bool = True) -> LiveDaemon:
        self.thread.start()
        # The tests' readers open the store as writers do (schema and all); one racing the
        # owner's creation of a fresh file may find it locked. (A store that cannot be
        # opened is a storage fault, and the daemon runs on without it.)
        wait_until(lambda: self.daemon.store is not None
                   or self.daemon.storage_health.failing("store"), timeout=5,
                   what="store opened or refused")
        if ready:
            wait_until(lambda: self.sms.status()["ok"], timeout=5, what="modem ready")
        return self

    def stop(self) -> None:
        self.daemon.request_stop()
        self.thread.join(5)
        self.server.close()
        self.daemon.close()

    def call(self, fn, *args):
        return self.daemon.loop.call(fn, *args)

    def press(self, name: str = "guard_room") -> None:
        self.call(self.daemon.simulate, name, True)

    def status(self) -> dict:
        return self.call(self.daemon.status)

    def events(self, *kinds: str):
        return stored_events(self.cfg, *kinds)

    def alive(self) -> bool:
        return self.thread.is_alive() and self.sms._thread.is_alive()


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def write_sms_config(tmp_path, short_dir, emulator):
    """write_sms_config(**config_text options) → the path of the written config."""
    def write(**options):
        path = tmp_path / "config.toml"
        path.write_text(config_text(tmp_path / "var", short_dir / "control.sock",
                                    emulator.port, **options), encoding="utf-8")
        return path
    return write


@pytest.fixture
def make_config(write_sms_config):
    return lambda **options: config_mod.load(str(write_sms_config(**options)))


@pytest.fixture
def live(make_config, wait_until):
    """live(ready=True, clock=None, **config options) → a started LiveDaemon (with ready:
    once its modem is), stopped at teardown."""
    started = []

    def start(ready: bool = True, clock: Clock | None = None, **options):
        daemon = LiveDaemon(make_config(**options), clock).start(wait_until, ready)
        started.append(daemon)
        return daemon
    yield start
    for daemon in started:
        daemon.stop()


# --------------------------------------------------------------------------- alerts

def test_panic_press_sends_the_principal_the_chinese_alert(live, emulator, wait_until):
    d = live()
    before = dt.datetime.now(SHANGHAI)
    d.press()
    sent = emulator.wait_sent(1, timeout=5)
    (panic,) = d.events("panic")
    assert sent[0].number == PRINCIPAL and sent[0].concat is None
    assert decoded(sent) == PANIC_TEXT.format(time=local_hms(panic))
    assert before - dt.timedelta(seconds=1) <= panic.time <= dt.datetime.now(SHANGHAI)
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"},
               what="the SMS row marked sent")
    assert texts_to(emulator, DEPUTY) == []  # the deputy is told of tampering only


def _render_panic(template: str, time: str) -> str:
    """The panic SMS to the principal from ``template``: it ends with the reply hint."""
    return template.format(site="高山小学", label="门卫室一键报警", time=time) + REPLY_HINT


def _three_part_panic_template() -> str:
    """A panic template that makes, with the reply hint, a 150-character Chinese text:
    three UCS-2 parts."""
    head = "【{site}】紧急报警：{label} 于 {time} 触发。"
    filler = "请值班人员立即前往现场查看情况，确认全体师生安全后回复收到。" * 5
    return head + filler[:150 - len(_render_panic(head, "07:42:15"))]


def test_long_chinese_alert_goes_as_three_parts_gammu_joins_in_order(live, emulator,
                                                                      wait_until):
    template = _three_part_panic_template()
    d = live(sms=f'templates = {{ panic = "{template}" }}')
    d.press()
    sent = emulator.wait_sent(3, timeout=5)
    (panic,) = d.events("panic")
    expected = _render_panic(template, local_hms(panic))
    assert len(expected) == 150
    assert [m.concat[1:] for m in sent] == [(3, 1), (3, 2), (3, 3)]
    assert len({m.concat[0] for m in sent}) == 1  # one reference ties them together
    assert decoded(sent) == expected  # linked by Gammu from the parts in reverse order
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"})


def test_a_template_without_the_signature_is_signed_all_the_same(make_config):
    cfg = make_config(sms='templates = { panic = "{label} {time} 报警" }')
    when = dt.datetime(2026, 9, 1, 7, 42, 15, tzinfo=SHANGHAI)
    panic = Event(seq=1, id="x", kind="panic", subject="guard_room", time=when,
                  data={"label": "门卫室一键报警"})
    assert alert_text(panic, cfg, now=when) == "【高山小学】门卫室一键报警 07:42:15 报警"


def test_an_sms_about_an_event_of_another_day_carries_its_date(make_config):
    cfg = make_config()
    when = dt.datetime(2026, 9, 1, 23, 59, 58, tzinfo=SHANGHAI)
    held = Event(seq=1, id="x", kind="gate_held_open", subject="main_gate", time=when,
                 data={"label": "校门"})
    same_day = alert_text(held, cfg, fallback=True, now=when + dt.timedelta(seconds=1))
    after_midnight = alert_text(held, cfg, fallback=True, now=when + dt.timedelta(seconds=3))
    assert same_day.startswith("【高山小学】门未关闭：校门 于 23:59:58 仍然开着")
    assert after_midnight.startswith("【高山小学】门未关闭：校门 于 9月1日 23:59:58 仍然开着")
    # The day is the site's: 23:59:58 in Shanghai is 15:59:58 UTC, the same UTC day.
    utc_next_morning = dt.datetime(2026, 9, 1, 16, 30, tzinfo=dt.timezone.utc)
    assert "于 9月1日 23:59:58" in alert_text(held, cfg, now=utc_next_morning)


@pytest.mark.parametrize("sms, to, hint", [
    ("", "principal", REPLY_HINT),
    ('command_pin = "2580"', "principal",
     "回复“密码+解除”关闭警号，回复“密码+收到”表示已知悉（警号继续鸣响）。"),
    ("", "deputy", ""),  # may not command: not told to reply
    ("", None, ""),
])
def test_an_alarm_sms_says_what_each_reply_does_to_whoever_may_reply(make_config, sms, to,
                                                                     hint):
    cfg = make_config(sms=sms)
    when = dt.datetime(2026, 9, 1, 7, 42, 15, tzinfo=SHANGHAI)
    panic = Event(seq=1, id="x", kind="panic", subject="guard_room", time=when,
                  data={"label": "门卫室一键报警"})
    text = alert_text(panic, cfg, to=to, now=when)
    assert text == "【高山小学】紧急报警：门卫室一键报警 于 07:42:15 触发。" + hint
    assert "2580" not in text
    held = dataclasses.replace(panic, kind="gate_held_open", subject="main_gate",
                               data={"label": "校门"})
    assert "回复" not in alert_text(held, cfg, to=to, now=when)  # no siren to reply to


def test_only_kinds_a_contact_receives_reach_it(live, emulator, wait_until):
    d = live()
    d.call(d.daemon.simulate, "box", True)
    emulator.wait_sent(2, timeout=5)
    (tamper,) = d.events("tamper")
    expected = f"【高山小学】防拆报警：报警主机防拆 于 {local_hms(tamper)} 被打开。"
    # Only a contact who may command is told what a reply does.
    assert texts_to(emulator, PRINCIPAL) == [expected + REPLY_HINT]
    assert texts_to(emulator, DEPUTY) == [expected]
    d.call(d.daemon.simulate, "main_gate", True)  # a gate opening: nobody receives gate_open
    wait_until(lambda: d.events("gate_open"), what="gate_open stored")
    d.press()
    emulator.wait_sent(3, timeout=5)
    assert len(texts_to(emulator, PRINCIPAL)) == 2 and len(texts_to(emulator, DEPUTY)) == 1


def test_without_uplink_other_kinds_go_at_once(live, emulator, wait_until):
    d = live(held_open_s=1, sms='templates = { gate_held_open = "【{site}】{label}开着（{time}）" }')
    d.call(d.daemon.simulate, "main_gate", True)
    (message,) = emulator.wait_sent(1, timeout=5)
    (held,) = d.events("gate_held_open")
    assert decoded([message]) == f"【高山小学】校门开着（{local_hms(held)}）"
    wait_until(lambda: sms_states(d.cfg, held.seq) == {"principal": "sent"})
    assert sms_rows(d.cfg, held.seq)[0]["fallback"] == 0


def test_with_an_unreachable_uplink_a_non_immediate_kind_falls_back_to_sms(
        live, emulator, tmp_path, wait_until):
    token = tmp_path / "token"
    token.write_text("secret\n")
    d = live(held_open_s=1, uplink=f'url = "http://127.0.0.1:{closed_port()}/api/v1/events"\n'
                                   f'token_file = "{token}"\nsms_fallback_after_s = 1')
    d.press()  # immediate: the platform is not waited for
    emulator.wait_sent(1, timeout=5)
    (panic,) = d.events("panic")
    assert sms_rows(d.cfg, panic.seq)[0]["fallback"] == 0
    d.call(d.daemon.simulate, "main_gate", True)
    held = wait_until(lambda: d.events("gate_held_open"), timeout=5)[0]
    (row,) = sms_rows(d.cfg, held.seq)
    assert row["fallback"] == 1 and row["state"] == "waiting"
    # The principal is also told of the uplink's own fault, which may come first.
    expected = (f"【高山小学】门未关闭：校门 于 {local_hms(held)} 仍然开着，"
                "已超过规定时长。（平台无法连接，经短信补发）")
    wait_until(lambda: expected in texts_to(emulator, PRINCIPAL), timeout=5,
               what="the held-open fallback SMS")
    sent_after = time.time() - held.ts
    assert sent_after >= 0.9, "the fallback SMS went before sms_fallback_after_s"


class SteppedClock(Clock):
    """The real clocks, with the wall clock stepped by ``step_s`` (NTP at boot)."""

    step_s = 0.0

    def now(self) -> dt.datetime:
        return super().now() + dt.timedelta(seconds=self.step_s)


def test_a_clock_stepped_forward_does_not_send_waiting_fallbacks_early(
        live, emulator, tmp_path, wait_until):
    token = tmp_path / "token"
    token.write_text("secret\n")
    clock = SteppedClock()
    d = live(clock=clock, held_open_s=1,
             uplink=f'url = "http://127.0.0.1:{closed_port()}/api/v1/events"\n'
                    f'token_file = "{token}"\nsms_fallback_after_s = 3')
    d.call(d.daemon.simulate, "main_gate", True)
    held = wait_until(lambda: d.events("gate_held_open"), timeout=5)[0]
    # From the event's own instant (the clock not stepped yet), however late it was seen.
    held_mono = time.monotonic() - (time.time() - held.ts)
    clock.step_s = 6 * 3600.0  # the clock is set six hours forward while the SMS waits
    d.sms.wake()  # as any new event would: the outbox is looked at right after the step

    def held_texts():
        return [t for t in texts_to(emulator, PRINCIPAL) if "门未关闭" in t]
    wait_until(held_texts, timeout=8, what="the held-open fallback SMS")
    # It went when its 3 s were up, not at the step, and its deadline moved with the clock.
    assert time.monotonic() - held_mono >= 1.5
    with sqlite3.connect(d.cfg.storage.db_path) as db:
        (due,) = db.execute("SELECT due FROM sms WHERE seq=?", (held.seq,)).fetchone()
    assert due - held.ts == pytest.approx(3 + clock.step_s, abs=0.5)


# --------------------------------------------------------------------------- commands

def alarm_raised(d: LiveDaemon, emulator: ModemEmulator) -> None:
    d.press()
    emulator.wait_sent(1, timeout=5)
    assert d.status()["siren"]["on"]


@pytest.mark.parametrize("word", ["STATUS", "状态", "status"])
def test_status_command_is_answered_with_the_alarm_state(live, emulator, word):
    d = live()
    alarm_raised(d, emulator)
    emulator.deliver(PRINCIPAL, word)
    emulator.wait_sent(2, timeout=5)
    reply = texts_to(emulator, PRINCIPAL)[1]
    assert reply.startswith("【高山小学】状态 ")
    assert "报警中：门卫室一键报警" in reply and "门：校门关" in reply and "信号20" in reply
    assert d.status()["alarm"]["active"]  # asking changes nothing
    assert emulator.stored == {}  # read, then deleted from the SIM


# What a principal types on a phone, and what the device makes of it.
COMMAND_FORMS = [
    ("SILENCE", "silence"), ("silence。", "silence"), ("Silence!", "silence"),
    ("ＳＩＬＥＮＣＥ", "silence"), ("Ｓｉｌｅｎｃｅ", "silence"), (" 解除 ", "silence"),
    ("SILENCE 解除", "silence"), ("SILENCE解除。", "silence"), ("解除报警", "silence"),
    ("确认解除", "silence"), ("请解除报警！", "silence"), ("解除警报", "silence"),
    ("收到，解除", "silence"), ("收到 SILENCE", "silence"),  # a silence word decides
    ("收到", "acknowledge"), ("收到。", "acknowledge"), ("ACK", "acknowledge"),
    ("ack", "acknowledge"), ("ＡＣＫ", "acknowledge"), ("已收到", "acknowledge"),
    ("收到了", "acknowledge"), ("确认收到", "acknowledge"), ("好的，收到", "acknowledge"),
    ("OK 收到👍", "acknowledge"), ("收到 状态", "acknowledge"),
    ("STATUS", "status"), ("status?", "status"), ("状态", "status"), ("状态查询", "status"),
    ("查询状态", "status"), ("ＳＴＡＴＵＳ", "status"),
    # Not a command: a question, a negation, other words, nothing.
    ("不要解除", None), ("解除了吗？", None), ("先别解除", None), ("没收到", None),
    ("收不到", None), ("ACKNOWLEDGE", None), ("你好", None), ("确认", None), ("报警", None),
    ("2580 解除", None), ("", None), (" 。", None), ("门卫已到场，解除", None),
]


@pytest.mark.parametrize("text, command", COMMAND_FORMS)
def test_parse_command_reads_what_a_principal_means(text, command):
    assert parse_command(text) == command


@pytest.mark.parametrize("word", ["SILENCE", "解除", "silence。", "SILENCE 解除", "解除报警",
                                  "ＳＩＬＥＮＣＥ", "确认解除"])
def test_silence_command_from_the_principal_silences(live, emulator, wait_until, word):
    d = live()
    alarm_raised(d, emulator)
    (panic,) = d.events("panic")
    emulator.deliver(PRINCIPAL, word)
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.subject == "guard_room"
    assert (silenced.data["by"], silenced.data["via"]) == ("principal", "sms")
    assert silenced.data["alarm_id"] == panic.id
    status = d.status()
    assert not status["alarm"]["active"] and not status["siren"]["on"]
    emulator.wait_sent(2, timeout=5)
    reply = texts_to(emulator, PRINCIPAL)[1]
    assert reply.startswith("【高山小学】已解除1个报警，警号已关闭。") and "无报警" in reply


@pytest.mark.parametrize("word", ["收到", "ACK", "收到。"])
def test_ack_leaves_the_siren_on_and_records_the_acknowledgement(live, emulator, wait_until,
                                                                 word):
    d = live()
    alarm_raised(d, emulator)
    (panic,) = d.events("panic")
    emulator.deliver(PRINCIPAL, word)
    (acked,) = wait_until(lambda: d.events("acknowledged"), timeout=5)
    assert acked.subject == "guard_room" and acked.data["alarm_id"] == panic.id
    assert (acked.data["by"], acked.data["via"]) == ("principal", "sms")
    # The reply, with the status, goes in two parts: waited for whole.
    reply = wait_until(lambda: texts_to(emulator, PRINCIPAL)[1:], timeout=5)[0]
    assert reply.startswith("【高山小学】已记录您知悉1个报警，报警未解除；回复“解除”关闭警号并解除报警。")
    assert "警号鸣响中" in reply  # the status that follows: the siren sounds on
    status = d.status()
    assert status["alarm"]["active"] and status["siren"]["on"] and d.events("silenced") == []
    emulator.deliver(PRINCIPAL, "解除")  # the alarm stayed latched: 解除 still ends it
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.data["alarm_id"] == panic.id and not d.status()["siren"]["on"]


def test_a_contact_that_receives_acknowledged_is_told_who_acknowledged(live, emulator,
                                                                      wait_until):
    d = live(principal_receives=("panic", "acknowledged"))
    alarm_raised(d, emulator)
    emulator.deliver(PRINCIPAL, "收到")
    (acked,) = wait_until(lambda: d.events("acknowledged"), timeout=5)
    told = f"【高山小学】报警已知悉：门卫室一键报警 的报警由 principal 于 {local_hms(acked)} 回复收到，报警未解除。"
    wait_until(lambda: told in texts_to(emulator, PRINCIPAL), timeout=5,
               what="the acknowledged SMS")


def test_a_national_number_is_the_same_contact(live, emulator, wait_until):
    d = live()
    alarm_raised(d, emulator)
    emulator.deliver("13800138000", "解除")
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.data["by"] == "principal"
    emulator.wait_sent(2, timeout=5)
    assert emulator.sent[1].number == PRINCIPAL  # the reply goes to the configured number


@pytest.mark.parametrize("sender, contact", [(STRANGER, None), (DEPUTY, "deputy")])
def test_silence_from_a_number_that_may_not_command_changes_nothing(
        live, emulator, wait_until, sender, contact):
    d = live()
    alarm_raised(d, emulator)
    emulator.deliver(sender, "SILENCE 快关掉")
    (refused,) = wait_until(lambda: d.events("sms_refused"), timeout=5)
    assert refused.data["number"] == sender and refused.data["text"] == "SILENCE 快关掉"
    assert refused.data["contact"] == contact
    assert emulator.stored == {}
    status = d.status()
    assert status["alarm"]["active"] and status["siren"]["on"]
    assert d.events("silenced") == []
    emulator.deliver(PRINCIPAL, "STATUS")  # answered after anything owed the refused one
    emulator.wait_sent(2, timeout=5)
    assert [m.number for m in emulator.sent] == [PRINCIPAL, PRINCIPAL]  # no answer to it


def test_a_command_arriving_while_an_alarm_is_being_sent_is_answered(live, emulator,
                                                                    wait_until):
    d = live()
    emulator.prompt_delay = 0.3
    emulator.urc_in_next_response("^RSSI: 18")  # noise inside the answer to the PDU
    d.press()
    wait_until(lambda: cmgs_issued(emulator), what="AT+CMGS")
    emulator.deliver(PRINCIPAL, "状态")  # its +CMTI comes while '>' is awaited
    emulator.wait_sent(2, timeout=5)
    alert, reply = texts_to(emulator, PRINCIPAL)
    assert alert.startswith("【高山小学】紧急报警") and "报警中：门卫室一键报警" in reply


@pytest.mark.parametrize("text, answer", [
    ("你好", "【高山小学】未识别的指令。"),  # unknown words get the help text
    ("收到", "【高山小学】当前没有需要确认的报警。无报警"),  # an ack without an alarm
])
def test_a_text_that_acts_on_nothing_is_answered_and_records_nothing(live, emulator, text,
                                                                     answer):
    d = live()
    emulator.deliver(PRINCIPAL, text)
    (reply,) = emulator.wait_sent(1, timeout=5)
    assert decoded([reply]).startswith(answer)
    assert d.events("silenced", "acknowledged", "sms_refused") == []


# --------------------------------------------------------------------------- modem health

def modem_events(d: LiveDaemon) -> list[tuple[str, str]]:
    return [(e.kind, e.data["reason"]) for e in d.events("fault", "recovered")
            if e.subject == "modem"]


def test_unplug_and_replug_fault_then_recovered_and_no_sms_lost(live, emulator, wait_until):
    d = live(principal_receives=("panic", "tamper"))
    emulator.unplug()
    wait_until(lambda: modem_events(d) == [("fault", "port_gone")], timeout=5)
    status = d.status()
    assert status["faults"] == ["modem"] and status["modem"]["ok"] is False
    d.press()  # raised while the modem is away
    (panic,) = wait_until(lambda: d.events("panic"), timeout=5)
    assert sms_states(d.cfg, panic.seq) == {"principal": "pending"}
    emulator.replug()
    wait_until(lambda: modem_events(d) == [("fault", "port_gone"), ("recovered", "port_gone")],
               timeout=5)
    (message,) = emulator.wait_sent(1, timeout=5)
    assert decoded([message]) == PANIC_TEXT.format(time=local_hms(panic))
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"})
    assert d.status()["modem"]["ok"] and d.alive()
    d.call(d.daemon.simulate, "box", True)  # what is sent next comes after it, not it again
    emulator.wait_sent(3, timeout=5)
    assert [t[6:10] for t in texts_to(emulator, PRINCIPAL)] == ["紧急报警", "防拆报警"]


def test_a_silent_modem_is_a_fault_until_it_answers_again(live, emulator, wait_until):
    d = live(modem="health_s = 1", principal_receives=("panic",))
    emulator.silent = True
    wait_until(lambda: modem_events(d) == [("fault", "silent")], timeout=8)
    d.press()  # the siren does not wait for the modem
    assert d.status()["siren"]["on"]
    emulator.silent = False
    wait_until(lambda: modem_events(d)[-1:] == [("recovered", "silent")], timeout=10)
    emulator.wait_sent(1, timeout=5)
    assert len(texts_to(emulator, PRINCIPAL)) == 1 and d.alive()


@pytest.mark.parametrize("knob, value, reason", [
    ("sim_present", False, "sim_missing"),
    ("registration", 0, "not_registered"),
    ("signal", 2, "signal_low"),
    ("signal", 99, "signal_unknown"),
])
def test_health_check_faults_name_the_reason(live, emulator, wait_until, knob, value, reason):
    d = live(modem="health_s = 1")
    good = getattr(emulator, knob)
    setattr(emulator, knob, value)
    wait_until(lambda: modem_events(d) == [("fault", reason)], timeout=5)
    assert d.status()["modem"]["ok"] is False
    setattr(emulator, knob, good)
    wait_until(lambda: modem_events(d)[1:] == [("recovered", reason)], timeout=5)
    modem = d.status()["modem"]
    assert (modem["ok"], modem["signal"]) == (True, 20)


def test_sim_pin_is_entered_at_start(live, emulator):
    emulator.sim_pin = "1234"
    d = live(modem='sim_pin = "1234"')
    assert 'AT+CPIN="1234"' in emulator.commands
    d.press()
    emulator.wait_sent(1, timeout=5)


def test_a_wrong_sim_pin_is_a_fault_and_tried_once(live, emulator, wait_until):
    emulator.sim_pin = "1234"
    d = live(modem='sim_pin = "4321"\nhealth_s = 1', ready=False)
    wait_until(lambda: modem_events(d) == [("fault", "sim_pin")], timeout=5)
    # The worker goes on looking at the SIM every health_s (not in a busy loop), but
    # never offers that PIN again.
    wait_until(lambda: emulator.commands.count("AT+CPIN?") >= 3, timeout=5)
    before = emulator.commands.count("AT+CPIN?")
    time.sleep(1.0)
    assert emulator.commands.count("AT+CPIN?") - before <= 3
    assert emulator.pin_attempts == 1


def test_a_send_refused_by_the_network_is_retried_later_and_sent_once(
        live, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    d = live()
    emulator.fail_next_sends(38)  # +CMS ERROR: 38, network out of order
    d.press()
    (panic,) = wait_until(lambda: d.events("panic"))
    (row,) = wait_until(lambda: [r for r in sms_rows(d.cfg, panic.seq) if r["attempts"]])
    assert row["state"] == "pending" and "+CMS ERROR: 38" in row["last_error"]
    assert emulator.sent == []
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"}, timeout=5)
    assert len(emulator.sent) == 1
    assert sms_rows(d.cfg, panic.seq)[0]["attempts"] == 2


def test_a_multipart_alert_torn_by_the_network_is_completed_not_sent_again(
        live, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    template = _three_part_panic_template()
    d = live(sms=f'templates = {{ panic = "{template}" }}')
    emulator.fail_next_sends(38, after=1)  # part 1 goes, part 2 is refused
    d.press()
    (panic,) = wait_until(lambda: d.events("panic"))
    (row,) = wait_until(lambda: [r for r in sms_rows(d.cfg, panic.seq) if r["attempts"]])
    assert row["state"] == "pending" and len(json.loads(row["refs"])) == 1
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"}, timeout=5)
    sent = emulator.sent
    # The retry sends parts 2 and 3 under the first part's reference: the phone shows one
    # message, whole, and nothing twice.
    assert [m.concat[1:] for m in sent] == [(3, 1), (3, 2), (3, 3)]
    assert len({m.concat[0] for m in sent}) == 1
    assert decoded(sent) == _render_panic(template, local_hms(panic))
    (row,) = sms_rows(d.cfg, panic.seq)
    assert json.loads(row["refs"]) == [m.reference for m in sent]


# --------------------------------------------------------------------------- kill -9

@pytest.fixture
def daemon_process(write_sms_config, tmp_path):
    """daemon_process(**config options) → a real `edge-alarm run` (RunningDaemon) and its
    Config; every one started is stopped at teardown."""
    started = []

    def start(**options):
        path = write_sms_config(**options)
        cfg = config_mod.load(str(path))
        daemon = start_daemon(path, cfg.control.socket, tmp_path / f"run{len(started)}.log")
        started.append(daemon)
        return daemon, cfg
    yield start
    for daemon in started:
        stop_daemon(daemon)


def kill_9(daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    assert daemon.proc.wait(5) == -signal.SIGKILL


def sim(cfg, name: str, state: str = "on") -> None:
    request(cfg.control.socket, "sim", {"input": name, "state": state})


def panic_texts_after_a_later_alarm(cfg, emulator, wait_until) -> list[str]:
    """Raise a tamper alarm and wait for its SMS: the outbox goes in event order, so
    anything still owed for earlier events has been sent by then. The principal's
    panic texts."""
    sim(cfg, "box")
    (tamper,) = wait_until(lambda: stored_events(cfg, "tamper"), timeout=10)
    wait_until(lambda: set(sms_states(cfg, tamper.seq).values()) == {"sent"}, timeout=10)
    return [t for t in texts_to(emulator, PRINCIPAL) if "紧急报警" in t]


def test_an_alarm_sent_before_kill_9_is_not_sent_again(daemon_process, emulator, wait_until):
    first, cfg = daemon_process()
    wait_until(lambda: request(cfg.control.socket, "status")["modem"]["ok"], timeout=10)
    sim(cfg, "guard_room")
    (panic,) = wait_until(lambda: stored_events(cfg, "panic"), timeout=5)
    wait_until(lambda: sms_states(cfg, panic.seq) == {"principal": "sent"}, timeout=10)
    kill_9(first)
    daemon_process()
    assert panic_texts_after_a_later_alarm(cfg, emulator, wait_until) == [
        PANIC_TEXT.format(time=local_hms(panic))]


def test_an_alarm_not_yet_sent_at_kill_9_is_sent_after_restart(daemon_process, emulator,
                                                                 wait_until):
    first, cfg = daemon_process()
    wait_until(lambda: request(cfg.control.socket, "status")["modem"]["ok"], timeout=10)
    emulator.prompt_delay = 2.0  # the network is slow: killed while waiting for '>'
    sim(cfg, "guard_room")
    wait_until(lambda: cmgs_issued(emulator), timeout=5, what="AT+CMGS")
    kill_9(first)
    emulator.prompt_delay = 0.0
    (panic,) = stored_events(cfg, "panic")
    assert sms_states(cfg, panic.seq) == {"principal": "pending"}
    assert emulator.sent == []
    daemon_process()
    wait_until(lambda: sms_states(cfg, panic.seq) == {"principal": "sent"}, timeout=15)
    assert panic_texts_after_a_later_alarm(cfg, emulator, wait_until) == [
        PANIC_TEXT.format(time=local_hms(panic))]


# --------------------------------------------------------------------------- test-sms

def test_test_sms_through_the_running_daemon(live, emulator, write_sms_config):
    d = live()
    result = edge_cli("test-sms", "13800138000", "Test 1, 2: ok?", config=d.cfg.path)
    assert result.returncode == 0, result.stderr
    (message,) = emulator.wait_sent(1, timeout=1)  # sent before the command returned
    assert (message.number, decoded([message])) == ("13800138000", "Test 1, 2: ok?")
    assert "sent to 13800138000 (1 part(s)" in result.stdout
    result = edge_cli("test-sms", PRINCIPAL, config=d.cfg.path)  # no TEXT: the signed test text
    assert result.returncode == 0, result.stderr
    assert decoded(emulator.sent[1:]).startswith("【高山小学】测试短信：")
    assert d.events() == []  # a test SMS is no event


def test_test_sms_failing_through_the_daemon_exits_1(live, emulator):
    d = live()
    emulator.fail_next_sends(500)
    result = edge_cli("test-sms", PRINCIPAL, "x", config=d.cfg.path)
    assert result.returncode == 1
    assert "+CMS ERROR: 500" in result.stderr
    assert d.alive()


@pytest.mark.parametrize("number, text, reason", [
    ("1-800", "x", "is not a phone number"),  # refused by the PDU encoder in the worker
    ("", "x", "is not a phone number"),
    (PRINCIPAL, "a lone surrogate \ud800", "not valid UTF-8"),  # refused at the socket
])
def test_a_test_sms_the_encoder_refuses_is_answered_not_left_waiting(live, emulator, number,
                                                                      text, reason):
    d = live()
    with pytest.raises(EdgeAlarmError, match=reason):
        request(d.cfg.control.socket, "test-sms", {"number": number, "text": text},
                timeout=20)
    assert d.alive() and emulator.sent == []
    assert request(d.cfg.control.socket, "test-sms", {"number": PRINCIPAL, "text": "ok"})


@pytest.mark.parametrize("written, dialled", [("+86 138-0013-8000", PRINCIPAL),
                                              ("(010) 6552-9988", "01065529988"),
                                              ("0086 138 0013 8000", PRINCIPAL)])
def test_test_sms_reads_a_number_written_with_separators(live, emulator, written, dialled):
    d = live()
    result = edge_cli("test-sms", written, "x", config=d.cfg.path)
    assert result.returncode == 0, result.stderr
    assert [m.number for m in emulator.wait_sent(1, timeout=1)] == [dialled]


def test_test_sms_without_a_daemon_opens_the_port_itself(write_sms_config, emulator):
    config = write_sms_config()
    result = edge_cli("test-sms", PRINCIPAL, "紧急测试", config=config)
    assert result.returncode == 0, result.stderr
    result = edge_cli("test-sms", "10086", "CXYE", config=config)  # a carrier's service number
    assert result.returncode == 0, result.stderr
    assert [(m.number, decoded([m])) for m in emulator.sent] == [(PRINCIPAL, "紧急测试"),
                                                                  ("10086", "CXYE")]


@pytest.mark.parametrize("problem, message", [
    ("no_sim", "no usable SIM"),
    ("no_modem", "no [modem] is configured"),
])
def test_test_sms_failures_exit_1(write_sms_config, emulator, problem, message):
    config = write_sms_config()
    if problem == "no_sim":
        emulator.sim_present = False
    else:
        config = write_sms_config(modem=None)
    result = edge_cli("test-sms", PRINCIPAL, "x", config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert emulator.sent == []


@pytest.mark.parametrize("argv, message", [
    ([b"principal", b"x"], "'principal' is not a phone number"),
    ([b"+86 138-0013-8000 ext 5", b"x"], "is not a phone number"),
    ([PRINCIPAL.encode(), "测试".encode("gbk")], "TEXT is not valid UTF-8"),
])
def test_test_sms_refuses_a_bad_number_or_text_in_one_line(write_sms_config, emulator, argv,
                                                           message):
    # argv as bytes: a GBK terminal's text reaches Python as surrogate escapes.
    result = subprocess.run([sys.executable.encode(), b"-m", b"edge", b"test-sms", *argv,
                             b"-c", bytes(write_sms_config())], capture_output=True,
                            timeout=20, env=_child_env())
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert message in stderr and stderr.count("\n") == 1
    assert emulator.sent == []


def test_a_failed_reply_does_not_lose_the_next_command(live, emulator, wait_until):
    d = live(principal_receives=("panic",))
    alarm_raised(d, emulator)
    emulator.unplug()  # both arrive while the modem is away: read in one scan after replug
    emulator.deliver(PRINCIPAL, "STATUS")
    emulator.deliver(PRINCIPAL, "SILENCE")
    emulator.fail_next_sends(500)  # the answer to STATUS does not go
    emulator.replug()
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.data["by"] == "principal"
    emulator.wait_sent(2, timeout=5)
    assert texts_to(emulator, PRINCIPAL)[1].startswith("【高山小学】已解除1个报警")
    assert emulator.stored == {}


def test_an_sms_cut_off_by_an_unplug_goes_as_soon_as_the_modem_is_back(live, emulator,
                                                                        wait_until):
    d = live(principal_receives=("panic",))
    emulator.prompt_delay = 0.5
    d.press()
    wait_until(lambda: cmgs_issued(emulator), what="AT+CMGS")
    emulator.unplug()
    emulator.prompt_delay = 0.0
    emulator.replug()
    (message,) = emulator.wait_sent(1, timeout=6)  # not after the 10 s retry pause
    (panic,) = d.events("panic")
    assert decoded([message]) == PANIC_TEXT.format(time=local_hms(panic))


# --------------------------------------------------------------------------- drill

def test_a_drill_press_is_texted_as_a_drill_to_those_told_of_panics(live, emulator,
                                                                     wait_until):
    d = live()
    d.call(d.daemon.set_drill, True, 600)
    d.press()
    sent = emulator.wait_sent(1, timeout=5)
    (drill,) = d.events("drill")
    assert d.events("panic") == []
    assert sent[0].number == PRINCIPAL  # the deputy is not told of panics: no drill SMS
    assert decoded(sent) == (f"【高山小学】【演练】门卫室一键报警 于 {local_hms(drill)} "
                             "触发（演练，非真实报警）。")
    wait_until(lambda: sms_states(d.cfg, drill.seq) == {"principal": "sent"}, timeout=5,
               what="the drill SMS row marked sent")


# --------------------------------------------------------------------------- review fixes

def test_an_unreadable_new_message_never_holds_up_the_alarm_sms(live, emulator, wait_until):
    d = live()
    emulator.refuse("AT+CMGR=7")
    emulator.inject(b'\r\n+CMTI: "SM",7\r\n')  # announced, but the modem will not read it
    d.press()
    sent = emulator.wait_sent(1, timeout=5)
    assert decoded(sent).startswith("【高山小学】紧急报警：")


def test_a_silence_never_announced_is_found_by_the_periodic_listing(live, emulator,
                                                                     wait_until):
    # A modem that refuses every AT+CNMI never announces new messages with +CMTI.
    emulator.refuse("AT+CNMI=2,1,0,0,0", "AT+CNMI=2,1", "AT+CNMI=1,1,0,0,0", "AT+CNMI=1,1")
    d = live(modem="health_s = 1")
    alarm_raised(d, emulator)
    emulator.deliver(PRINCIPAL, "SILENCE")
    wait_until(lambda: d.events("silenced"), timeout=5, what="the SILENCE read by listing")
    assert not d.status()["alarm"]["active"]


def test_alarms_still_go_by_sms_when_the_store_cannot_be_opened(make_config, tmp_path,
                                                                 emulator, wait_until):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the storage directory should be")
    cfg = make_config()
    cfg = dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage,
                                                               path=blocker / "var"))
    d = LiveDaemon(cfg).start(wait_until)
    try:
        assert "storage" in d.status()["faults"]
        d.press()
        # From memory (the store owes nothing yet), after the storage fault's own SMS.
        wait_until(lambda: any(t.startswith("【高山小学】紧急报警：门卫室一键报警")
                               for t in texts_to(emulator, PRINCIPAL)), timeout=5,
                   what="the panic SMS sent from memory")
        assert d.status()["siren"]["on"]
    finally:
        d.stop()


def test_an_unstored_alarms_sms_refused_once_is_tried_again(live, emulator, wait_until,
                                                            monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    d = live(principal_receives=("panic",))

    monkeypatch.setattr(d.daemon.store, "append", refuse_writes)  # every event refused
    emulator.fail_next_sends(38)  # and the network refuses the first attempt
    d.press()
    wait_until(lambda: d.status()["storage"]["unstored"] >= 1, what="the panic kept in memory")
    wait_until(lambda: any(t.startswith("【高山小学】紧急报警") for t in texts_to(emulator, PRINCIPAL)),
               what="the panic SMS, on its second attempt")
    assert sum(c.startswith("AT+CMGS=") for c in emulator.commands) == 2


def test_a_refused_sms_is_given_up_after_its_attempts_not_by_the_clock(
        live, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.2)
    monkeypatch.setattr(edge.sms, "SEND_GIVE_UP_ATTEMPTS", 3)
    clock = SteppedClock()
    d = live(clock=clock, principal_receives=("panic",))
    emulator.fail_next_sends(38, 38, 38, 38)
    d.press()
    (panic,) = wait_until(lambda: d.events("panic"))
    wait_until(lambda: sms_rows(d.cfg, panic.seq)[0]["attempts"] >= 1)
    clock.step_s = 3 * 86400.0  # NTP sets the clock of a Pi that was off for three days
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "failed"},
               what="given up after three refusals")
    (row,) = sms_rows(d.cfg, panic.seq)
    assert row["attempts"] == 3 and "+CMS ERROR: 38" in row["last_error"]


def test_a_fallback_made_after_a_clock_step_keeps_its_deadline(live, emulator, tmp_path,
                                                               wait_until):
    token = tmp_path / "token"
    token.write_text("secret\n")
    clock = SteppedClock()
    d = live(clock=clock, uplink=f'url = "http://127.0.0.1:{closed_port()}/api/v1/events"\n'
                                 f'token_file = "{token}"\nsms_fallback_after_s = 3')
    clock.step_s = 120.0  # NTP steps the clock two minutes forward, and before the SMS
    # worker looks again an event owing a fallback is stored with the stepped clock:
    held = d.call(d.daemon.record, "gate_held_open", "main_gate", "校门",
                  {"held_open_alert_s": 3})
    with sqlite3.connect(d.cfg.storage.db_path) as db:
        (due,) = db.execute("SELECT due FROM sms WHERE seq=?", (held.seq,)).fetchone()
    assert due - held.ts == pytest.approx(3, abs=0.01)
    d.sms.wake()
    wait_until(lambda: any("门未关闭" in t for t in texts_to(emulator, PRINCIPAL)),
               what="the fallback SMS 3 s after its event")
    assert time.time() + clock.step_s - held.ts < 10


def test_a_clock_step_the_store_cannot_record_holds_no_sms_back(live, emulator, wait_until,
                                                                monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    clock = SteppedClock()
    d = live(clock=clock, principal_receives=("panic",))
    emulator.fail_next_sends(38)  # the panic's first attempt is refused: it stays pending
    d.press()
    (panic,) = wait_until(lambda: d.events("panic"))
    wait_until(lambda: sms_rows(d.cfg, panic.seq)[0]["attempts"] >= 1)

    monkeypatch.setattr(Store, "shift_wall_times", refuse_writes)  # the card went read-only
    clock.step_s = 30.0  # and NTP corrected the clock by half a minute
    d.sms.wake()
    wait_until(lambda: texts_to(emulator, PRINCIPAL), what="the pending panic SMS")


def test_an_unstored_alarms_multipart_sms_torn_by_the_network_is_completed(
        live, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    template = _three_part_panic_template()
    d = live(principal_receives=("panic",), sms=f'templates = {{ panic = "{template}" }}')

    monkeypatch.setattr(d.daemon.store, "append", refuse_writes)
    emulator.fail_next_sends(38, after=1)  # part 1 goes, part 2 is refused
    d.press()
    sent = emulator.wait_sent(3, timeout=10)
    assert [m.concat[1:] for m in sent] == [(3, 1), (3, 2), (3, 3)]
    assert len({m.concat[0] for m in sent}) == 1
    assert decoded(sent).startswith("【高山小学】紧急报警：门卫室一键报警")


# --------------------------------------------------------------------------- one order

EVERY_KIND = ("panic", "tamper", "gate_after_hours", "gate_held_open", "fault", "gate_open")
KIND_WORDS = {"紧急报警": "panic", "防拆报警": "tamper", "门未关闭": "gate_held_open",
              "设备故障": "fault", "于 ": "gate_open"}  # words of the default texts


# What the daemon itself puts in these kinds' data (docs/cloudevents.schema.json).
DATA_OF_KIND = {"gate_held_open": {"held_open_alert_s": 300}}


def record(d: LiveDaemon, kind: str, subject: str = "main_gate", label: str = "校门"):
    """An event of ``kind`` recorded on the owner loop as the daemon would."""
    return d.call(d.daemon.record, kind, subject, label, DATA_OF_KIND.get(kind))


def kinds_to(emulator: ModemEmulator, number: str = PRINCIPAL) -> list[str]:
    """The kind of each message sent to ``number``, in order, read from its text; other
    texts (replies, test SMS) as themselves."""
    return [next((kind for word, kind in KIND_WORDS.items() if word in text), text)
            for text in texts_to(emulator, number)]


def cmgs_count(emulator: ModemEmulator) -> int:
    return sum(c.startswith("AT+CMGS=") for c in emulator.commands)


def test_alarm_sms_go_first_panic_and_tamper_before_other_alarms_before_the_rest(
        live, emulator, wait_until):
    d = live(principal_receives=EVERY_KIND)
    emulator.unplug()  # they all wait in the outbox together
    wait_until(lambda: not d.status()["modem"]["ok"], what="the unplug noticed")
    for kind in ("gate_open", "gate_held_open", "gate_open", "panic", "gate_open", "tamper"):
        record(d, kind)
    emulator.replug()
    wait_until(lambda: len(kinds_to(emulator)) == 7, timeout=10, what="seven SMS")
    # The modem's own fault (at the unplug) is an alarm kind too.
    assert kinds_to(emulator) == ["panic", "tamper", "fault", "gate_held_open", "gate_open",
                                  "gate_open", "gate_open"]


def test_a_new_alarm_is_the_next_sms_after_the_one_in_flight(live, emulator, wait_until):
    d = live(principal_receives=EVERY_KIND)
    emulator.send_time = 0.3  # every SMS takes its time
    for _ in range(12):  # a dozen gate notices due at once
        record(d, "gate_open")
    wait_until(lambda: cmgs_issued(emulator), what="the first gate notice in flight")
    panic = record(d, "panic", "guard_room", "门卫室一键报警")
    issued = cmgs_count(emulator)  # the one in flight (and the panic's, if it went already)
    wait_until(lambda: "panic" in kinds_to(emulator), timeout=15, what="the panic SMS")
    assert kinds_to(emulator).index("panic") <= issued
    emulator.send_time = 0.0
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"})


def test_replies_and_test_sms_go_after_alarms_and_before_the_rest(live, emulator,
                                                                   wait_until):
    d = live(principal_receives=EVERY_KIND)
    emulator.delay_next_send_answer(1.5)  # the first gate notice stays in flight a while
    record(d, "gate_open")
    wait_until(lambda: cmgs_issued(emulator), what="the gate notice in flight")
    replies = [d.sms.send_direct(PRINCIPAL, f"reply {n}") for n in range(3)]
    record(d, "gate_open")
    record(d, "gate_held_open")
    record(d, "panic", "guard_room", "门卫室一键报警")
    wait_until(lambda: len(kinds_to(emulator)) == 7, timeout=10, what="seven SMS")
    assert kinds_to(emulator) == ["gate_open", "panic", "gate_held_open", "reply 0",
                                  "reply 1", "reply 2", "gate_open"]
    assert all(len(reply.result(timeout=1)) == 1 for reply in replies)


def test_the_reply_queue_is_bounded(live, emulator, wait_until):
    d = live()
    emulator.delay_next_send_answer(1.5)
    in_flight = d.sms.send_direct(PRINCIPAL, "in flight")
    wait_until(lambda: cmgs_issued(emulator), what="the first reply in flight")
    queued = [d.sms.send_direct(PRINCIPAL, f"reply {n}") for n in range(edge.sms.REPLY_QUEUE_CAP)]
    refused = d.sms.send_direct(PRINCIPAL, "one too many")
    assert isinstance(refused.exception(timeout=0), edge.sms.ModemError)
    assert "not queued" in str(refused.exception())
    assert d.status()["modem"]["sms"]["replies_queued"] == edge.sms.REPLY_QUEUE_CAP
    in_flight.result(timeout=5)
    assert all(future.result(timeout=10) for future in queued)
    assert "one too many" not in texts_to(emulator, PRINCIPAL)


# --------------------------------------------------------------------------- resent

RESENT_PANIC_TEXT = PANIC_TEXT.replace("【高山小学】", "【高山小学】（重发）")


@pytest.mark.parametrize("how", ["unplugged", "timeout"])
def test_an_sms_whose_confirmation_was_lost_goes_again_marked_as_resent(
        live, emulator, wait_until, monkeypatch, how):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    d = live(principal_receives=("panic",))
    emulator.lose_next_send_answer()  # the network takes it; its +CMGS never comes
    d.press()
    emulator.wait_sent(1, timeout=5)
    if how == "unplugged":  # the modem vanishes while the driver waits for +CMGS
        emulator.unplug()
        emulator.replug()
    # else: the driver's send deadline (3 s here) passes after the PDU went
    sent = emulator.wait_sent(2, timeout=10)
    (panic,) = d.events("panic")
    assert [decoded([m]) for m in sent] == [PANIC_TEXT.format(time=local_hms(panic)),
                                            RESENT_PANIC_TEXT.format(time=local_hms(panic))]
    wait_until(lambda: sms_states(d.cfg, panic.seq) == {"principal": "sent"})
    assert sms_rows(d.cfg, panic.seq)[0]["maybe_sent"] == 1


def test_an_unstored_alarms_sms_whose_confirmation_was_lost_goes_again_marked(
        live, emulator, wait_until, monkeypatch):
    d = live(principal_receives=("panic",))
    monkeypatch.setattr(d.daemon.store, "append", refuse_writes)
    emulator.lose_next_send_answer()
    d.press()
    emulator.wait_sent(1, timeout=5)
    emulator.unplug()
    emulator.replug()
    sent = emulator.wait_sent(2, timeout=10)
    assert decoded(sent[1:]) == "【高山小学】（重发）" + decoded(sent[:1])[len("【高山小学】"):]


def test_a_multipart_sms_resent_goes_whole_under_a_new_reference(live, emulator, wait_until,
                                                                   monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SEND_RETRY_FIRST_S", 0.5)
    template = _three_part_panic_template()
    d = live(principal_receives=("panic",), sms=f'templates = {{ panic = "{template}" }}')
    emulator.lose_next_send_answer()  # part 1 goes, its answer is lost
    d.press()
    sent = emulator.wait_sent(4, timeout=10)  # part 1, then the marked copy whole
    (panic,) = d.events("panic")
    first, copy = sent[:1], sent[1:]
    assert [m.concat[1:] for m in copy] == [(3, 1), (3, 2), (3, 3)]
    assert len({m.concat[0] for m in copy}) == 1 and copy[0].concat[0] != first[0].concat[0]
    assert decoded(copy) == _render_panic(template.replace("】", "】（重发）", 1),
                                          local_hms(panic))


# --------------------------------------------------------------------------- memory caps

def modem_away(d: LiveDaemon, emulator: ModemEmulator, wait_until) -> None:
    emulator.unplug()
    wait_until(lambda: not d.status()["modem"]["ok"], what="the unplug noticed")


def test_sms_of_unstored_events_are_capped_alarms_kept_first(live, emulator, wait_until,
                                                             monkeypatch):
    monkeypatch.setattr(edge.sms_memory, "MEMORY_SMS_CAP", 3)
    monkeypatch.setattr(edge.sms_outgoing, "SENT_RECORDS_CAP", 2)
    d = live(principal_receives=("panic", "gate_open"))
    modem_away(d, emulator, wait_until)
    monkeypatch.setattr(d.daemon.store, "append", refuse_writes)  # every event refused
    events = [record(d, kind) for kind in ("gate_open", "gate_open", "gate_open", "panic",
                                           "gate_open")]
    assert d.status()["modem"]["sms"].items() >= {"memory": 3, "sent_from_memory": 0,
                                                  "replies_queued": 0, "unrecorded": 0,
                                                  "dropped": 2}.items()
    emulator.replug()
    wait_until(lambda: d.status()["modem"]["sms"]["memory"] == 0, timeout=10,
               what="the SMS kept in memory sent")
    assert kinds_to(emulator) == ["panic", "gate_open", "gate_open"]
    sms = d.status()["modem"]["sms"]
    assert (sms["sent_from_memory"], sms["dropped"]) == (2, 3)
    assert d.sms.sent_from_memory(events[3].id) == {"principal"}  # the panic's kept


def test_sms_sent_but_not_recorded_are_capped_and_never_sent_over_and_over(
        live, emulator, wait_until, monkeypatch):
    monkeypatch.setattr(edge.sms_outgoing, "SENT_RECORDS_CAP", 2)
    d = live(principal_receives=("panic", "gate_open", "gate_held_open"))
    modem_away(d, emulator, wait_until)
    monkeypatch.setattr(Store, "mark_sms", refuse_writes)  # sent, never recorded
    for kind in ("gate_open", "gate_open", "gate_open", "panic"):
        record(d, kind)
    emulator.replug()
    wait_until(lambda: d.status()["modem"]["sms"]["unrecorded"] == 2, timeout=10)
    record(d, "gate_held_open")  # an alarm still goes, a gate notice's record is forgotten
    wait_until(lambda: "gate_held_open" in kinds_to(emulator), timeout=10)
    assert kinds_to(emulator) == ["panic", "gate_open", "gate_held_open"]
    sms = d.status()["modem"]["sms"]
    assert (sms["unrecorded"], sms["dropped"]) == (2, 1)


def test_status_counts_the_lines_over_the_readers_bound(live, emulator, wait_until):
    d = live()
    wait_until(lambda: d.status()["modem"]["ok"], what="the modem ready")
    assert d.status()["modem"]["lines_dropped"] == 0
    emulator.stream(b"x" * 10_000 + b"\r\n")
    wait_until(lambda: d.status()["modem"]["lines_dropped"] == 1,
               what="the overlong line counted in status")


def test_a_flood_of_incoming_sms_is_read_between_sends_not_ahead_of_an_alarm(
        live, emulator, wait_until):
    d = live()
    wait_until(lambda: d.status()["modem"]["ok"], what="the modem ready")
    emulator.response_delay = 0.02  # every AT command takes its time, as on a real modem
    for n in range(25):  # most of what a SIM holds
        emulator.deliver(f"+861390000{n:04d}", "hello")
    # Read one by one (+CMTI) or swept up by the periodic listing of the SIM's memory.
    wait_until(lambda: any(c.startswith(("AT+CMGR=", "AT+CMGL=")) for c in emulator.commands),
               what="the flood being read")
    d.press()
    wait_until(lambda: cmgs_count(emulator) == 1, timeout=20, what="the panic SMS sent")
    commands = list(emulator.commands)
    first_send = next(i for i, c in enumerate(commands) if c.startswith("AT+CMGS="))
    assert sum(c.startswith("AT+CMGR=") for c in commands[:first_send]) < 25
    wait_until(lambda: len(d.events("sms_refused")) == 25, timeout=30,
               what="every SMS of the flood read and recorded")
