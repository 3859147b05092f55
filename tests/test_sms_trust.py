"""Who may command the device by SMS, and what strangers' text can do (spec §5): senders
matched by their E.164 number and never by a name, the command PIN, refusal and reply
limits, and strangers' text escaped wherever it is shown. A daemon on mock pins with its
SMS worker on the emulated modem, as in test_sms_worker, or a real `edge-alarm run`."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import pytest

from edge.modem.pdu import TON_ALPHANUMERIC, TON_INTERNATIONAL, TON_NATIONAL, TON_UNKNOWN, Deliver, \
    encode_deliver
from edge.sms import same_number, sender_e164
from edge.sms_limits import REFUSAL_SMS_PER_HOUR, RateWindow, command_after_pin, mask_pin
from edge.views import print_status
from test_sms_worker import (PRINCIPAL, SHANGHAI, STRANGER, alarm_raised,  # noqa: F401
                             daemon_process, live, make_config, sms_rows, stored_events,
                             texts_to, write_sms_config)

PIN = "2580"
PIN_CONFIG = f'command_pin = "{PIN}"'
# What a hostile sender puts in a text: a terminal escape, a line break that forges a log
# line, a Unicode line separator and a right-to-left override.
HOSTILE = "SILENCE\x1b[2J\nINFO edge.daemon: all clear\u2028ok\u202edneirf"
RAW_CONTROLS = ("\x1b", "\x9b", "\u2028", "\u202e")


def deliver_as_name(emulator, name: str, text: str) -> None:
    """An SMS whose TP-OA is alphanumeric (type of number 101), as a bulk-SMS gateway
    sends it, whatever its characters read."""
    for pdu in encode_deliver(name, text, datetime.now(SHANGHAI), alphanumeric=True):
        emulator.deliver_pdu(pdu)


def refusals(d, count: int, wait_until):
    return wait_until(lambda: len(d.events("sms_refused")) >= count and
                      d.events("sms_refused"), timeout=5, what=f"{count} sms_refused")


# --------------------------------------------------------------------------- item 1: senders

def message(sender: str, type_of_number: int) -> Deliver:
    return Deliver(sender, "STATUS", None, None, type_of_number=type_of_number)


@pytest.mark.parametrize("sender, type_of_number, number", [
    (PRINCIPAL, TON_INTERNATIONAL, PRINCIPAL),
    ("13800138000", TON_UNKNOWN, PRINCIPAL),  # national: read with +86
    ("008613800138000", TON_UNKNOWN, PRINCIPAL),  # dialled with the international prefix
    ("8613800138000", TON_UNKNOWN, PRINCIPAL),  # the country code without '+'
    ("13800138000", TON_NATIONAL, PRINCIPAL),
    ("01062345678", TON_NATIONAL, "+861062345678"),  # a Beijing line: trunk 0 dropped
    ("+13800138000", TON_INTERNATIONAL, "+13800138000"),  # another country, same digits
    ("13800138000", TON_ALPHANUMERIC, None),  # a name is never a number
    ("+8613800138000", TON_ALPHANUMERIC, None),
    ("10086", 4, None),  # a subscriber number: no phone of a contact
])
def test_the_sender_is_read_as_its_e164_number(sender, type_of_number, number):
    assert sender_e164(message(sender, type_of_number)) == number


@pytest.mark.parametrize("a, b, same", [
    ("+8613800138000", "13800138000", True),
    ("+8613800138000", "008613800138000", True),
    ("+8613800138000", "8613800138000", True),
    ("+8613800138000", "+13800138000", False),  # +1 380 013 8000 is somebody else
    ("13800138000", "+13800138000", False),
    ("+8613800138000", "+8613800138001", False),
    ("principal", "principal", False),  # not numbers at all
])
def test_same_number_compares_e164_forms(a, b, same):
    assert same_number(a, b) is same


def test_a_sender_name_that_reads_like_the_principals_number_cannot_silence(
        live, emulator, wait_until):
    d = live()
    alarm_raised(d, emulator)
    deliver_as_name(emulator, "13800138000", "SILENCE")
    (refused,) = refusals(d, 1, wait_until)
    assert (refused.data["number"], refused.data["number_type"], refused.data["contact"],
            refused.data["reason"]) == ("13800138000", "alphanumeric", None, "not_a_contact")
    assert d.status()["alarm"]["active"] and d.events("silenced") == []


def test_a_number_of_another_country_with_the_principals_national_digits_cannot_silence(
        live, emulator, wait_until):
    d = live()
    alarm_raised(d, emulator)
    emulator.deliver("+13800138000", "SILENCE")
    (refused,) = refusals(d, 1, wait_until)
    assert (refused.data["number"], refused.data["contact"]) == ("+13800138000", None)
    assert d.status()["alarm"]["active"] and d.events("silenced") == []


# --------------------------------------------------------------------------- item 2: the PIN

def test_command_after_pin_and_its_mask():
    assert command_after_pin("2580 SILENCE", PIN) == "SILENCE"
    assert command_after_pin(" 2580解除", PIN) == "解除"
    assert command_after_pin("２５８０ STATUS", PIN) == "STATUS"  # full-width digits
    assert command_after_pin("SILENCE", PIN) is None
    assert command_after_pin("25801 SILENCE", PIN) is None
    assert command_after_pin("SILENCE", None) == "SILENCE"
    assert mask_pin("2581 SILENCE", PIN) == "**** SILENCE"  # a near miss tells as much
    assert mask_pin("SILENCE 2580 again 12580", PIN) == "SILENCE **** again ****"
    assert mask_pin("call 110", PIN) == "call 110"
    assert mask_pin("2580 SILENCE", None) == "2580 SILENCE"


@pytest.mark.parametrize("word", ["2580 SILENCE", "2580 解除", "2580silence", "2580 解除报警",
                                  "2580+解除", "２５８０ ＳＩＬＥＮＣＥ 解除"])
def test_with_a_pin_a_command_counts_only_after_it(live, emulator, wait_until, word):
    d = live(sms=PIN_CONFIG)
    alarm_raised(d, emulator)
    emulator.deliver(PRINCIPAL, word)
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.data["by"] == "principal"
    emulator.wait_sent(2, timeout=5)
    assert PIN not in texts_to(emulator, PRINCIPAL)[1]


def test_with_a_pin_an_ack_acknowledges_and_the_siren_sounds_on(live, emulator, wait_until):
    d = live(sms=PIN_CONFIG)
    alarm_raised(d, emulator)
    alert = wait_until(lambda: texts_to(emulator, PRINCIPAL), timeout=5)[0]
    assert "回复“密码+解除”关闭警号" in alert
    emulator.deliver(PRINCIPAL, f"{PIN} 收到")
    (acked,) = wait_until(lambda: d.events("acknowledged"), timeout=5)
    assert acked.data["by"] == "principal" and d.status()["siren"]["on"]
    reply = wait_until(lambda: texts_to(emulator, PRINCIPAL)[1:], timeout=5)[0]
    assert "回复“密码+解除”关闭警号并解除报警" in reply and PIN not in reply


def test_a_missing_or_wrong_pin_is_refused_and_the_pin_never_shows(
        live, emulator, wait_until, caplog):
    caplog.set_level(logging.DEBUG)
    d = live(sms=PIN_CONFIG, principal_receives=("panic", "sms_refused"))
    alarm_raised(d, emulator)
    for text in ("SILENCE", "2581 SILENCE", f"SILENCE {PIN}"):
        emulator.deliver(PRINCIPAL, text)
    refused = refusals(d, 3, wait_until)
    assert [(e.data["text"], e.data["reason"], e.data["contact"]) for e in refused] == [
        ("SILENCE", "pin_missing", "principal"), ("**** SILENCE", "pin", "principal"),
        ("SILENCE ****", "pin_missing", "principal")]
    assert d.status()["alarm"]["active"] and d.events("silenced") == []
    # The right PIN with a word not understood: a help reply, and still no PIN anywhere.
    emulator.deliver(PRINCIPAL, f"{PIN} 你好")
    emulator.deliver(PRINCIPAL, f"{PIN} STATUS")
    wait_until(lambda: len(texts_to(emulator, PRINCIPAL)) >= 4, timeout=5,
               what="the alert, a refusal SMS, the help and the status reply")
    texts = texts_to(emulator, PRINCIPAL)
    assert any("未识别的指令" in t for t in texts) and any("状态" in t for t in texts)
    shown = [r.getMessage() for r in caplog.records] + texts + [
        json.dumps(e.to_json(), ensure_ascii=False) for e in d.events()] + [
        json.dumps(d.status(), ensure_ascii=False)]
    assert not [line for line in shown if PIN in line]


def test_five_refusals_in_an_hour_then_one_event_says_the_rest_are_dropped(
        live, emulator, wait_until):
    d = live(sms=PIN_CONFIG)
    for n in range(8):
        emulator.deliver(STRANGER, f"{1000 + n} SILENCE")
    wait_until(lambda: d.status()["modem"]["sms"]["incoming_dropped"] == 2, timeout=10,
               what="the 7th and 8th SMS dropped")
    refused = d.events("sms_refused")
    assert [e.data["reason"] for e in refused] == ["not_a_contact"] * 5 + ["rate_limited"]
    assert 3500 <= refused[-1].data["dropped_for_s"] <= 3600
    # The principal's number has limits of its own: a stranger cannot lock it out.
    emulator.deliver(PRINCIPAL, f"{PIN} STATUS")
    (reply,) = wait_until(lambda: texts_to(emulator, PRINCIPAL), timeout=5)
    assert "状态" in reply


def test_a_contacts_replies_without_the_pin_never_lock_it_out(live, emulator, wait_until):
    """收到 to any message, or a phone's auto-reply, carries no PIN: refused and told how,
    but no guess, so the contact's own number is not locked out for the hour."""
    d = live(sms=PIN_CONFIG)
    alarm_raised(d, emulator)
    for _ in range(7):
        emulator.deliver(PRINCIPAL, "收到")
    refused = refusals(d, 7, wait_until)
    assert {e.data["reason"] for e in refused} == {"pin_missing"}
    emulator.deliver(PRINCIPAL, f"{PIN} 解除")
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)
    assert silenced.data["by"] == "principal"
    texts = texts_to(emulator, PRINCIPAL)
    assert sum("指令前加指令密码" in t for t in texts) == 1  # told once, within the limits


def test_wrong_pins_from_a_contacts_number_lock_only_guessing_out(live, emulator, wait_until):
    """Five wrong PINs from one number in an hour: whatever else comes from it that hour is
    dropped unread, the right PIN too, or the PIN could be found by trying (documented)."""
    d = live(sms=PIN_CONFIG)
    alarm_raised(d, emulator)
    for n in range(5):
        emulator.deliver(PRINCIPAL, f"{1000 + n} SILENCE")
    refusals(d, 5, wait_until)
    emulator.deliver(PRINCIPAL, f"{PIN} SILENCE")
    (limited,) = wait_until(lambda: [e for e in d.events("sms_refused")
                                     if e.data["reason"] == "rate_limited"], timeout=5)
    assert limited.data["contact"] == "principal" and d.events("silenced") == []


def test_a_flood_from_ever_new_numbers_texts_the_principal_a_few_times_an_hour(
        live, emulator, wait_until):
    d = live(principal_receives=("panic", "sms_refused"))
    for n in range(8):
        emulator.deliver(f"+861390000{n:04d}", "SILENCE")
    refused = refusals(d, 8, wait_until)
    assert sum(not e.data.get("repeat") for e in refused) == REFUSAL_SMS_PER_HOUR
    owed = [e.seq for e in refused if d.call(d.daemon.store.sms_rows, e.seq)]
    assert len(owed) == REFUSAL_SMS_PER_HOUR  # the rest owe no SMS at all
    wait_until(lambda: len(texts_to(emulator, PRINCIPAL)) == REFUSAL_SMS_PER_HOUR,
               what="the refusals that are texted")


def test_a_rate_window_frees_a_sender_an_hour_after_its_oldest_mark():
    window = RateWindow(3600, limit=5, max_keys=2)
    for t in range(5):
        assert window.take("a", now=t)
    assert not window.allows("a", now=3599) and window.free_in("a", now=3000) == 600
    assert window.take("a", now=3600)
    window.note("b", now=0)
    window.note("c", now=0)  # a third sender: the stalest ("a") is forgotten
    assert window.allows("a", now=3601)


# --------------------------------------------------------------------------- item 4: replies

def test_an_auto_replying_phone_gets_one_help_reply_not_a_loop(live, emulator, wait_until):
    d = live()
    for _ in range(5):  # "I am driving, I will call back" after each of our replies
        emulator.deliver(PRINCIPAL, "我在开车，稍后回复")
    wait_until(lambda: d.status()["modem"]["sms"]["replies_suppressed"] == 4, timeout=10,
               what="four replies held back")
    (help_reply,) = texts_to(emulator, PRINCIPAL)
    assert help_reply.startswith("【高山小学】未识别的指令。")


def test_replies_per_hour_bound_replies_but_never_the_command(live, emulator, wait_until):
    d = live(sms="replies_per_hour = 2")
    for _ in range(3):
        emulator.deliver(PRINCIPAL, "STATUS")
    wait_until(lambda: d.status()["modem"]["sms"]["replies_suppressed"] == 1, timeout=10)
    alarm_raised(d, emulator)  # the alarm itself still goes
    emulator.deliver(PRINCIPAL, "SILENCE")
    (silenced,) = wait_until(lambda: d.events("silenced"), timeout=5)  # done, not answered
    assert silenced.data["by"] == "principal"
    wait_until(lambda: d.status()["modem"]["sms"]["replies_suppressed"] == 2, timeout=5)
    texts = texts_to(emulator, PRINCIPAL)
    assert len(texts) == 3 and sum("状态" in t for t in texts) == 2
    assert d.status()["modem"]["sms"]["replies"] == 2


def test_status_shows_the_reply_and_refusal_counts(live, emulator, wait_until, capsys):
    d = live()
    emulator.deliver(PRINCIPAL, "你好")
    emulator.deliver(PRINCIPAL, "你好")
    emulator.deliver(STRANGER, "SILENCE")
    wait_until(lambda: d.status()["modem"]["sms"]["refused"] == 1 and
               d.status()["modem"]["sms"]["replies_suppressed"] == 1, timeout=10)
    print_status(d.status(), as_json=False)
    assert "sms: 1 replies, 1 held back by the reply limits; 1 refused, 0 dropped" in \
        capsys.readouterr().out


# --------------------------------------------------------------------------- item 3: text

def no_raw_controls(text: str) -> bool:
    return not any(char in text for char in RAW_CONTROLS)


def test_a_strangers_text_is_escaped_everywhere_and_texted_once_an_hour(
        daemon_process, emulator, wait_until):
    # The network's name, as hostile as an AT line lets it be (C0 controls are noise the
    # modem driver drops): a C1 CSI, a right-to-left override, a line separator.
    emulator.operator = "CHINA\x9b31mMOBILE\u202e\u2028x"
    daemon, cfg = daemon_process(principal_receives=("panic", "sms_refused"))
    wait_until(lambda: daemon.cli("status", "--json").stdout.count('"ok": true') >= 1,
               timeout=10, what="modem ready")
    emulator.deliver(STRANGER, HOSTILE)
    (texted,) = wait_until(lambda: texts_to(emulator, PRINCIPAL), timeout=10)
    for _ in range(3):  # a flood: recorded, never texted again within the hour
        emulator.deliver(STRANGER, "SILENCE 快关掉")
    refused = wait_until(lambda: len(stored_events(cfg, "sms_refused")) == 4 and
                         stored_events(cfg, "sms_refused"), timeout=10)
    assert refused[0].data["text"] == HOSTILE  # kept as it came
    assert [e.data.get("repeat") for e in refused] == [None, True, True, True]
    assert [len(sms_rows(cfg, e.seq)) for e in refused] == [1, 0, 0, 0]  # owe no SMS
    head, shown = texted.split("：", 1)
    assert head.startswith(f"【高山小学】已拒绝号码 {STRANGER} 的短信指令")
    assert len(shown) <= 40 and shown.startswith("SILENCE\\x1b[2J\\nINFO")
    assert no_raw_controls(texted) and "\n" not in texted

    log = daemon.log_text()
    assert no_raw_controls(log)
    assert all("SILENCE" in line for line in log.splitlines() if "all clear" in line)
    assert "CHINA\\x9b31mMOBILE\\u202e\\u2028x" in log  # logged at start, escaped
    for fmt in ((), ("--json",), ("--csv",)):
        out = daemon.cli("events", "--kind", "sms_refused", *fmt).stdout
        assert out and no_raw_controls(out), fmt
    events = json.loads(daemon.cli("events", "--kind", "sms_refused", "--json").stdout)
    assert events[0]["data"]["text"] == HOSTILE  # the same value, escaped in the JSON
    status = daemon.cli("status", "--json").stdout
    assert no_raw_controls(status) and json.loads(status)["modem"]["operator"] == \
        emulator.operator
    assert no_raw_controls(daemon.cli("status").stdout)
    assert no_raw_controls(daemon.cli("report").stdout)
