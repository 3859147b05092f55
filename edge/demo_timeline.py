"""What `edge-alarm demo` prints: the timeline of a simulated school gate, its events in
words and the SMS as the principal's phone shows them (edge/demo.py tells the story)."""

from __future__ import annotations

import datetime as dt
import time
import unicodedata

from edge.events import Event
from edge.sim.modem import ModemEmulator, SentSms
from edge.sms_text import REASON_WORDS

BOX_WIDTH = 78          # terminal columns of an SMS as the phone shows it
# Punctuation that stays on the line it ends rather than start the next one.
CLOSING_PUNCTUATION = "。，、；：！？）」』】"


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
    "call": "报警电话 {subject} — escalation call: {result}",
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
