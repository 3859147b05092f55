"""The modem emulator's SIM and network answers: error mode, PIN, card id, registration,
operator, signal, model, SMS centre."""

from __future__ import annotations

from edge.sim.modem_base import EmulatorBase


class NetworkAnswers(EmulatorBase):
    """AT+CMEE, +CPIN, +CCID, +CREG, +CEREG, +COPS, +CSQ, +CGMM, +CSCA."""

    model: str
    operator: str
    iccid: str
    signal: int

    def _at_cmee(self, operation, args, stop):
        if operation == "set":
            (self._cmee,) = self._integers(args)[:1] or [0]
            return []
        return ["+CMEE: (0-2)"] if operation == "test" else [f"+CMEE: {self._cmee}"]

    def _at_cpin(self, operation, args, stop):
        if not self.sim_present:
            raise self._cme(10)
        locked = self._pin_attempts >= 3
        if operation == "read":
            state = "SIM PUK" if locked else "READY" if self._sim_ready() else "SIM PIN"
            return [f"+CPIN: {state}"]
        if operation != "set":
            return []
        if locked:
            raise self._cme(12)
        if self._sim_ready():
            raise self._cme(3)  # operation not allowed: no PIN is asked
        if args.strip().strip('"') != self.sim_pin:
            with self._cond:
                self._pin_attempts += 1
            raise self._cme(16)
        self._pin_entered = True
        return []

    def _at_ccid(self, operation, args, stop):
        if not self.sim_present:
            raise self._cme(10)
        return [f"+CCID: {self.iccid}"]

    def _at_creg(self, operation, args, stop):
        return self._registration("+CREG", operation)

    def _at_cereg(self, operation, args, stop):
        return self._registration("+CEREG", operation)

    def _registration(self, name: str, operation: str) -> list[str]:
        if operation == "read":
            stat = self.registration if self._sim_ready() else 0
            return [f"{name}: 0,{stat}"]
        return [f"{name}: (0-2)"] if operation == "test" else []

    def _at_cops(self, operation, args, stop):
        if operation != "read":
            return []
        return [f'+COPS: 0,0,"{self.operator}",7' if self._registered() else "+COPS: 0"]

    def _at_csq(self, operation, args, stop):
        return ["+CSQ: (0-31,99),(0-7,99)"] if operation == "test" else [f"+CSQ: {self.signal},99"]

    def _at_cgmm(self, operation, args, stop):
        return [self.model]

    def _at_csca(self, operation, args, stop):
        self._require_sim()
        if operation == "set":
            self.smsc = args.split(",")[0].strip().strip('"')
            return []
        kind = 145 if self.smsc.startswith("+") else 129
        return [f'+CSCA: "{self.smsc}",{kind}']
