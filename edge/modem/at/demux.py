"""Which line is what: the pending command's echo, response and final result code, its
prompt, or an unsolicited result code (URC) for whoever listens."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Callable

from edge.modem.at.errors import AtError, CmeError, CmsError

log = logging.getLogger(__name__)

CTRL_Z = "\x1a"


@dataclass(frozen=True)
class Urc:
    """One unsolicited result code; ``pdu`` is the second line of +CMT / +CDS / +CBM."""

    line: str
    pdu: str | None = None


_FINAL_OK = "OK"
# Final result codes that end a command in failure (V.250 §5.7 and 27.007 §9.2).
_FINAL_FAILURES = ("ERROR", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE")
_CME = re.compile(r"\+CME ERROR:\s*(.*)")
_CMS = re.compile(r"\+CMS ERROR:\s*(.*)")

# Lines that a modem sends on its own. NO CARRIER and +CPIN: are also answers to a command:
# while a command is pending the pending command's rules decide first.
_URC_PREFIXES = (
    "+CMTI:", "+CMT:", "+CDS:", "+CDSI:", "+CBM:", "+CBMI:", "RING", "+CRING:", "+CLIP:",
    "+CCWA:", "+CREG:", "+CEREG:", "+CGREG:", "+C5GREG:", "^RSSI:", "^HCSQ:", "^MODE:",
    "^SYSSTART", "^SIMST:", "^SRVST:", "+CUSD:", "+CIEV:", "+CTZV:", "+CTZE:", "*PSUTTZ:",
    "DST:", "+CGEV:", "+CPIN:", "+CFUN:", "+QIND:", "+QUSIM:", "+PACSP", "RDY", "SMS Ready",
    "Call Ready", "NO CARRIER", "NORMAL POWER DOWN", "POWER DOWN", "UNDER-VOLTAGE",
    "OVER-VOLTAGE",
)
# URCs whose next line belongs to them: +CMT always; +CDS / +CBM in PDU mode (one field).
_TWO_LINE_URC = re.compile(r"\+CMT:|\+(?:CDS|CBM):\s*\d+\s*$")
_REGISTRATION = re.compile(r"\+C(?:5G|E|G)?REG:\s*(.*)")
_COMMAND_PREFIX = re.compile(r"AT([+^$%#*][A-Z0-9]+)", re.IGNORECASE)
# Characters that no AT line holds: line noise, NULs, bytes that are not UTF-8.
_NOISE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
# AT+CMGL of a full 255-message store is about 100 KB; nothing else comes close.
MAX_RESPONSE_BYTES = 512 * 1024


def _is_registration_urc(line: str) -> bool:
    """+CREG: <stat>[,"<lac>",...] is unsolicited; +CREG: <n>,<stat>[,...] answers AT+CREG?.

    The answer's second field is a bare number; the URC has one field, or a quoted one.
    """
    match = _REGISTRATION.match(line)
    if match is None:
        return False
    fields = [field.strip() for field in match.group(1).split(",")]
    return len(fields) < 2 or not fields[1].isdigit()


def is_urc(line: str) -> bool:
    """Whether ``line``, seen while no command claims it, is an unsolicited result code."""
    return line.startswith(_URC_PREFIXES)


def _error_code(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


class Pending:
    """The command in flight, filled in by the reader thread under the channel's condition."""

    def __init__(self, command: str, prompt_data: str | None):
        self.command = command
        match = _COMMAND_PREFIX.match(command)
        self.prefix = match.group(1).upper() + ":" if match else None
        self.echo = command.strip().upper()
        self.prompt_data = prompt_data
        self.awaiting_prompt = prompt_data is not None
        self.prompt_seen = False
        self.data_sent = False  # the prompt data is written: the modem has it
        self.lines: list[str] = []
        self.response_bytes = 0
        self.cut = False  # lines were left out: the response outgrew MAX_RESPONSE_BYTES
        self.final: str | None = None

    def is_echo(self, line: str) -> bool:
        upper = line.upper()
        if upper == self.echo:
            return True
        # With echo on the modem also echoes the PDU typed after the prompt.
        return self.prompt_data is not None and upper.lstrip("> ") == self.prompt_data.upper()

    def add(self, line: str) -> None:
        """Keep a response line, the first MAX_RESPONSE_BYTES of them."""
        self.response_bytes += len(line)
        if self.response_bytes > MAX_RESPONSE_BYTES:
            self.cut = True
        else:
            self.lines.append(line)

    def claims(self, line: str) -> bool:
        """Whether ``line`` is this command's response rather than a URC."""
        if self.prefix and line.upper().startswith(self.prefix):
            return not _is_registration_urc(line)
        return not is_urc(line)

    def result(self) -> list[str]:
        """The response lines once the final result code is OK; else its error raised."""
        final = self.final
        assert final is not None  # the channel waited for it
        if final == _FINAL_OK:
            return self.lines
        if match := _CME.match(final):
            raise CmeError(_error_code(match.group(1)), self.command)
        if match := _CMS.match(final):
            raise CmsError(_error_code(match.group(1)), self.command)
        raise AtError(f"{self.command}: {final}")


class UrcDemux:
    """Sorts the modem's lines on the reader thread: an echo of the pending command
    (dropped), a line of its response, its final result code, its ``>`` prompt, or a URC,
    which goes to ``on_urc`` even in the middle of a response. ``pending`` is guarded by
    ``state``, the channel's condition, notified when the pending command gets its prompt
    or its final result code."""

    def __init__(self, url: str, state: threading.Condition,
                 on_urc: Callable[[Urc], None] | None) -> None:
        self.url = url
        self.pending: Pending | None = None  # guarded by state
        self._state = state
        self._on_urc = on_urc
        self._urc_waiting_for_pdu: str | None = None  # reader thread only

    def take_prompt(self, unfinished: bytearray) -> None:
        """Consume a ``> `` prompt at the start of the ``unfinished`` line (no line end
        follows it)."""
        if not unfinished.startswith(b">"):
            return
        with self._state:
            pending = self.pending
            if pending is None or not pending.awaiting_prompt:
                return
            pending.awaiting_prompt = False
            pending.prompt_seen = True
            self._state.notify_all()
        unfinished[:] = unfinished[1:].lstrip(b" ")

    def take_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").strip()
        if _NOISE.search(line.rstrip(CTRL_Z)):
            # No AT line holds these; guessing what the rest meant could end a command
            # with someone else's OK. A line lost here costs at most a retry.
            log.warning("skipping noise on modem line %s: %r", self.url, raw[:80])
            return
        line = line.rstrip(CTRL_Z)
        if not line:
            return
        if self._urc_waiting_for_pdu is not None:
            header, self._urc_waiting_for_pdu = self._urc_waiting_for_pdu, None
            self._emit(Urc(header, line))
            return
        with self._state:
            pending = self.pending
            if pending is not None and pending.final is None:
                if self._sort_response_line(pending, line):
                    return
            elif line == ">" or line.startswith(("OK", "ERROR", "+CME ERROR", "+CMS ERROR")):
                log.debug("stray %r on %s (no command waiting for it)", line, self.url)
                return
        if _TWO_LINE_URC.match(line):
            self._urc_waiting_for_pdu = line
        else:
            self._emit(Urc(line))

    def _sort_response_line(self, pending: Pending, line: str) -> bool:
        """File ``line`` into the pending command; False if it is a URC. Holds _state."""
        if line == ">":  # a prompt followed by a line end (some modems), or a late one
            if pending.awaiting_prompt:
                pending.awaiting_prompt = False
                pending.prompt_seen = True
                self._state.notify_all()
            return True
        if pending.is_echo(line):
            return True
        if pending.awaiting_prompt and (line == _FINAL_OK or line.startswith("+CMGS:")):
            # A send succeeds only after its '>': this is the late answer to an earlier
            # send we stopped waiting for, not this one's (taking it would mark this SMS
            # sent without its PDU ever written).
            log.warning("stale %r before the '>' of %s on %s: ignored", line,
                        pending.command, self.url)
            return True
        if (line == _FINAL_OK or line in _FINAL_FAILURES or _CME.match(line)
                or _CMS.match(line)):
            pending.final = line
            self._state.notify_all()
            return True
        if pending.claims(line):
            pending.add(line)
            return True
        return False

    def _emit(self, urc: Urc) -> None:
        log.debug("URC on %s: %s", self.url, urc)
        if self._on_urc is None:
            return
        try:
            self._on_urc(urc)
        except Exception:  # a faulty handler must not stop the reader thread
            log.exception("URC handler failed on %r", urc)
