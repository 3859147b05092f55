"""What the parts of the modem emulator (edge.sim.modem.ModemEmulator) share: the records,
the final result codes a command ends with, the SIM's state and the guarded state."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

CTRL_Z = 0x1A
ESC = 0x1B


@dataclass(frozen=True)
class SentSms:
    """One PDU sent with AT+CMGS, as the network received it."""

    pdu: str
    number: str
    text: str
    concat: tuple[int, int, int] | None
    reference: int  # the <mr> answered in +CMGS


@dataclass
class Stored:
    stat: int  # 0 received unread, 1 received read
    pdu: str


def tpdu_length(pdu_hex: str) -> int:
    """Octets after the SCA: what AT+CMGS=<n> and +CMGR: …,<n> count (-1: no SCA)."""
    try:
        return len(pdu_hex) // 2 - 1 - int(pdu_hex[:2], 16)
    except ValueError:
        return -1


class Reply(Exception):
    """Ends a command with this final result code."""

    def __init__(self, final: str):
        self.final = final



class EmulatorBase:
    """The emulator's state the command handlers share (set up by ModemEmulator), and the
    answers they have in common."""

    sim_present: bool
    sim_pin: str
    registration: int
    echo: bool
    smsc: str
    _cond: threading.Condition  # guards the state and writes to the pty
    _cmee: int
    _cmgf: int
    _cnmi_mt: int
    _pin_entered: bool
    _pin_attempts: int
    _prompt_length: int | None
    _storage: dict[int, Stored]
    _indices: range
    _write: Callable[[bytes], None]
    _respond: Callable[[list[str], str], None]

    def _cme(self, code: int) -> Reply:
        return Reply("ERROR" if self._cmee == 0 else f"+CME ERROR: {code}")

    @staticmethod
    def _cms(code: int) -> Reply:
        return Reply(f"+CMS ERROR: {code}")

    def _sim_ready(self) -> bool:
        return self.sim_present and (not self.sim_pin or self._pin_entered)

    def _require_sim(self) -> None:
        if not self.sim_present:
            raise self._cms(310)
        if not self._sim_ready():
            raise self._cms(311)

    @staticmethod
    def _integers(args: str) -> list[int]:
        try:
            return [int(arg) for arg in args.split(",") if arg.strip()]
        except ValueError:
            raise Reply("ERROR") from None

    def _registered(self) -> bool:
        return self._sim_ready() and self.registration in (1, 5)
