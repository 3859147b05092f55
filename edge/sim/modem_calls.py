"""The modem emulator's voice calls: ATD answers OK at once, the call's progress shows in
AT+CLCC, its end comes unsolicited (BUSY, NO CARRIER), as on SIM7600 and EC2x."""

from __future__ import annotations

import threading

from edge.sim.modem_base import EmulatorBase, Reply


class CallAnswers(EmulatorBase):
    """ATD<number>;, AT+CLCC, AT+CHUP / ATH; the knobs ``call_outcome``, ``call_progress_s``."""

    call_outcome: str
    call_progress_s: float
    _call: dict | None  # the voice call: number, <stat> (27.007 +CLCC)
    _calls: list[str]  # every number dialled

    def _dial(self, number: str) -> list[str]:
        if not self._registered():
            raise Reply("NO CARRIER")
        with self._cond:
            self._calls.append(number)
            self._cond.notify_all()
            if self.call_outcome == "fail":
                raise Reply("NO CARRIER")
            call = self._call = {"number": number, "stat": 3}  # alerting
        outcome = self.call_outcome
        if outcome in ("answer", "busy"):
            threading.Timer(self.call_progress_s, self._call_progress,
                            args=(call, outcome)).start()
        return []

    def _call_progress(self, call: dict, outcome: str) -> None:
        with self._cond:
            if self._call is not call:
                return  # hung up meanwhile
            if outcome == "answer":
                call["stat"] = 0
            else:
                self._call = None
                self._write(b"\r\nBUSY\r\n")

    def _at_clcc(self, operation, args, stop):
        with self._cond:
            call = self._call
        if call is None:
            return []
        return [f'+CLCC: 1,0,{call["stat"]},0,0,"{call["number"]}",129']

    def _at_chup(self, operation, args, stop):
        with self._cond:
            self._call = None
            self._cond.notify_all()
        return []

    @property
    def calls(self) -> list[str]:
        """Every number dialled (ATD<number>;), in order."""
        with self._cond:
            return list(self._calls)

    @property
    def ringing(self) -> bool:
        """Whether a call is up (alerting or answered), not yet hung up."""
        with self._cond:
            return self._call is not None
