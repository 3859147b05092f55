"""What incoming SMS may cost (spec §5): a stranger's flood, a PIN guessed by brute force
or a phone that answers every SMS by itself are bounded here, per sender and per hour.

All of it runs on the SMS worker's thread, on the monotonic clock (a wall clock stepped
by NTP neither lifts nor extends a limit), and holds at most MAX_SENDERS senders.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import OrderedDict, deque

HOUR_S = 3600.0
# Senders remembered per limit; beyond, the one marked least recently is forgotten (a
# flood from thousands of numbers costs them an SMS each, and us no more memory).
MAX_SENDERS = 1024
REFUSALS_PER_HOUR = 5
# sms_refused SMS to the contacts, all senders together: each sender's first refusal of
# the hour is texted, up to this many an hour; the rest are events only.
REFUSAL_SMS_PER_HOUR = 5
ALL_SENDERS = ""  # the key of limits that count every sender together
PIN_MASK = "****"  # the same for any PIN, so not even its length shows

_LEADING_DIGITS = re.compile(r"\s*(\d+)\s*")


class RateWindow:
    """At most ``limit`` marks per key within any ``window_s`` seconds."""

    def __init__(self, window_s: float, limit: int = 1, max_keys: int = MAX_SENDERS):
        self.window_s = window_s
        self.limit = limit
        self._max_keys = max_keys
        self._marks: OrderedDict[str, deque[float]] = OrderedDict()

    def free_in(self, key: str, now: float) -> float:
        """Seconds until ``key`` may be marked again; 0 when it may now."""
        marks = self._marks.get(key)
        if marks is None or len(marks) < self.limit:
            return 0.0
        return max(0.0, marks[0] + self.window_s - now)

    def allows(self, key: str, now: float) -> bool:
        return self.free_in(key, now) == 0.0

    def note(self, key: str, now: float) -> None:
        marks = self._marks.pop(key, None) or deque(maxlen=self.limit)
        marks.append(now)
        self._marks[key] = marks  # the most recently marked last
        while len(self._marks) > self._max_keys:
            self._marks.popitem(last=False)

    def take(self, key: str, now: float) -> bool:
        """Mark ``key`` if it may be marked; whether it was."""
        if not self.allows(key, now):
            return False
        self.note(key, now)
        return True


def command_after_pin(text: str, pin: str | None) -> str | None:
    """The command words of ``text`` ("2580 SILENCE" → "SILENCE"); None when a PIN is set
    and the text does not begin with it."""
    if pin is None:
        return text
    leading = _LEADING_DIGITS.match(text)
    if leading is None or unicodedata.normalize("NFKC", leading.group(1)) != pin:
        return None
    return text[leading.end():]


def pin_attempted(text: str) -> bool:
    """Whether ``text`` begins with digits where a PIN goes (right or wrong): a guess,
    unlike a reply that has no PIN at all."""
    return _LEADING_DIGITS.match(text) is not None


def mask_pin(text: str, pin: str | None) -> str:
    """``text`` as it may be kept or shown: the digits where a PIN goes (right or wrong,
    a near miss tells as much) and any digits holding the PIN become PIN_MASK. Digits are
    whatever reads as one (full-width, superscript ²⁵⁸⁰, circled ②⑤⑧⓪): a reader sees
    the PIN in those as well."""
    if pin is None:
        return text
    leading = _LEADING_DIGITS.match(text)
    lead_at = leading.start(1) if leading else -1
    out, at = [], 0
    for is_digits, chars in itertools.groupby(text, key=_reads_as_digit):
        run = "".join(chars)
        shown = is_digits and (at == lead_at or pin in unicodedata.normalize("NFKC", run))
        out.append(PIN_MASK if shown else run)
        at += len(run)
    return "".join(out)


def _reads_as_digit(char: str) -> bool:
    return unicodedata.normalize("NFKC", char).isdecimal()
