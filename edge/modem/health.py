"""How a modem is: SIM, registration, signal, operator, SMS centre (the Modem's health
checks, a part of edge.modem.modem.Modem)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from edge.errors import ModemError
from edge.modem.at import AtChannel, AtError, AtTimeout, CmeError, CmsError, PortBusy, PortLost
from edge.modem.replies import fields as _fields
from edge.modem.replies import first as _first

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModemHealth:
    """``reason`` when not ok: "sim_missing", "sim_pin", "not_registered", "signal_unknown",
    "signal_low", "silent" (no answer, or no sensible one), "port_gone" or "smsc_empty".
    ``signal`` is the AT+CSQ rssi (0-31), None when unknown (99)."""

    ok: bool
    reason: str | None
    signal: int | None
    registered: bool
    operator: str | None


class HealthChecks:
    """The Modem's health checks; the Modem provides the port and its commands."""

    last_health: ModemHealth | None
    smsc: str | None
    min_signal: int
    _channel: AtChannel | None
    _smsc_empty: bool
    _at: Callable[..., list[str]]
    _sim_state: Callable[[], str]

    def health(self) -> ModemHealth:
        """Ask the modem how it is (SIM, registration, signal, operator, SMS centre)."""
        if self._channel is None or self._channel.lost:
            health = ModemHealth(False, "port_gone", None, False, None)
        else:
            try:
                health = self._probe()
            except AtTimeout:
                health = ModemHealth(False, "silent", None, False, None)
            except PortLost:
                health = ModemHealth(False, "port_gone", None, False, None)
            except ModemError as exc:  # an answer that makes no sense counts as none
                log.warning("modem health check failed: %s", exc)
                health = ModemHealth(False, "silent", None, False, None)
        self.last_health = health
        return health

    def health_after(self, error: ModemError) -> ModemHealth:
        """The health behind a failed ``ensure_ready()``: named by the error itself when
        it can be (asking a silent modem again would only wait out another timeout),
        else asked of the modem (SIM, PIN, registration…)."""
        for kind, reason in ((PortLost, "port_gone"), (AtTimeout, "silent"),
                             (PortBusy, "port_busy")):
            if isinstance(error, kind):
                health = ModemHealth(False, reason, None, False, None)
                self.last_health = health
                return health
        return self.health()

    def _probe(self) -> ModemHealth:
        sim = self._sim_state()
        if sim == "MISSING":
            return ModemHealth(False, "sim_missing", None, False, None)
        if sim not in ("READY", "BUSY"):
            return ModemHealth(False, "sim_pin", None, False, None)
        registered = self._registered()
        signal = self._signal()
        operator = self._operator() if registered else None
        self._smsc_empty = self._smsc_address() == ""
        if not registered:
            reason = "not_registered"
        elif signal is None:
            reason = "signal_unknown"
        elif signal < self.min_signal:
            reason = "signal_low"
        elif self._smsc_empty and self.smsc is None:
            reason = "smsc_empty"
        else:
            reason = None
        return ModemHealth(reason is None, reason, signal, registered, operator)

    def _registered(self) -> bool:
        """Registered (home, 1, or roaming, 5) on GSM or LTE; an LTE-only module may refuse
        AT+CREG? and a GSM-only one AT+CEREG?."""
        for command in ("AT+CREG?", "AT+CEREG?"):
            try:
                line = _first(self._at(command), command[2:-1] + ":")
            except (AtError, CmeError):
                continue
            fields = _fields(line) if line else []
            if len(fields) >= 2 and fields[1] in ("1", "5"):
                return True
        return False

    def _signal(self) -> int | None:
        try:
            line = _first(self._at("AT+CSQ"), "+CSQ:")
            rssi = int(_fields(line)[0]) if line else 99
        except (AtError, CmeError, ValueError):
            return None
        return rssi if 0 <= rssi <= 31 else None

    def _operator(self) -> str | None:
        try:
            line = _first(self._at("AT+COPS?"), "+COPS:")
        except (AtError, CmeError):
            return None
        fields = _fields(line) if line else []
        return fields[2] if len(fields) >= 3 and fields[2] else None

    def _smsc_address(self) -> str | None:
        """The SMS centre the modem holds: "" when empty, None when it will not say."""
        try:
            line = _first(self._at("AT+CSCA?"), "+CSCA:")
        except (AtError, CmeError, CmsError):
            return None
        return _fields(line)[0] if line else None
