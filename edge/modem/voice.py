"""Voice calls (27.007 §6.1, §7.18): ring a number, follow it with AT+CLCC, hang up
(a part of edge.modem.modem.Modem)."""

from __future__ import annotations

import threading
from typing import Callable

from edge.modem.at import AtError, CmeError
from edge.modem.replies import fields as _fields

# What ends a call, as the call's result.
CALL_ENDS = {"BUSY": "busy", "NO ANSWER": "no answer", "NO CARRIER": "no answer",
             "NO DIALTONE": "failed"}
_CLCC_ACTIVE = "0"  # +CLCC <stat>: 0 active (answered), 2 dialling, 3 alerting
CALL_POLL_S = 1.0  # AT+CLCC asked this often while a call rings


class VoiceCalls:
    """The Modem's voice calls; the Modem's reader thread sets ``_call_end``."""

    _call_end: str | None
    _clock: Callable[[], float]
    _at: Callable[..., list[str]]

    def voice_call(self, number: str, *, ring_s: float, cancel: threading.Event,
                   between: Callable[[], bool] = lambda: False,
                   poll_s: float = CALL_POLL_S) -> str:
        """Ring ``number`` (``ATD<number>;``) for up to ``ring_s``, or until the network
        ends the call or ``cancel`` is set; then hang up. SIM7600 and EC2x answer ATD at
        once: the progress is polled with AT+CLCC and the end comes as BUSY, NO ANSWER
        or NO CARRIER. ``between`` runs between polls (the caller reads new SMS: a
        SILENCE sets ``cancel``); True from it hangs up at once (something more urgent).
        Returns "answered", "no answer", "busy" or "failed"."""
        self._call_end = None
        try:
            self._at(f"ATD{number};")
        except (AtError, CmeError) as exc:  # NO CARRIER here: the call was never set up
            return next((CALL_ENDS[end] for end in ("BUSY", "NO ANSWER")
                         if str(exc).endswith(end)), "failed")
        answered = False
        deadline = self._clock() + ring_s
        try:
            while self._call_end is None and self._clock() < deadline and not cancel.is_set():
                states = self._call_states()
                if states is not None and not states:
                    break  # the network ended it, its reason maybe still on the way
                answered = answered or _CLCC_ACTIVE in (states or ())
                if between():
                    break
                cancel.wait(poll_s)
        finally:
            self._hang_up()
        if answered:
            return "answered"
        return CALL_ENDS.get(self._call_end or "", "no answer")

    def _call_states(self) -> list[str] | None:
        """The <stat> of each voice call AT+CLCC lists; None when it will not say."""
        try:
            lines = self._at("AT+CLCC")
        except (AtError, CmeError) as exc:
            end = next((e for e in CALL_ENDS if str(exc).endswith(e)), None)
            if end is None:
                return None
            self._call_end = end  # the call's end came as this command's answer
            return []
        return [_fields(line)[2] for line in lines
                if line.startswith("+CLCC:") and len(_fields(line)) >= 4
                and _fields(line)[3] == "0"]  # <mode> 0: voice

    def _hang_up(self) -> None:
        """AT+CHUP (27.007 §6.5), or ATH for a modem that refuses it."""
        try:
            self._at("AT+CHUP")
        except (AtError, CmeError):
            self._at("ATH")
