"""The AT command channel (3GPP TS 27.007 / 27.005) over a serial port.

One reader thread owns the port's input. It cuts the byte stream into lines and sorts each
line: an echo of the pending command (dropped), a line of the pending command's response,
its final result code, or an unsolicited result code (URC), which goes to ``on_urc`` even
when it arrives in the middle of a response. The ``> `` prompt of AT+CMGS comes without a
line end, so the reader also looks at the unfinished line while a prompt is awaited.

Every command has a hard deadline, and one command runs at a time. What the modem sends is
bounded too: a line over MAX_LINE_BYTES is dropped, a response over MAX_RESPONSE_BYTES cut,
so a modem that streams bytes for hours costs no more memory than a silent one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from edge.errors import ModemError

if TYPE_CHECKING:
    import serial  # pyserial: imported at run time where the port is opened

log = logging.getLogger(__name__)

CTRL_Z = "\x1a"
ESC = b"\x1b"


class AtTimeout(ModemError):
    """No final result code (or no ``>`` prompt) came before the deadline. ``data_sent``:
    the data after the prompt (an SMS PDU) had gone to the modem, which may have sent it."""

    data_sent = False


class AtError(ModemError):
    """The modem answered ERROR (or another failing final result such as NO CARRIER)."""


class CmeError(ModemError):
    """``+CME ERROR: <code>``: a mobile equipment error (27.007 §9.2); ``code`` is an int
    in numeric mode (AT+CMEE=1), the text in verbose mode."""

    def __init__(self, code: int | str, command: str):
        self.code = code
        super().__init__(f"{command}: +CME ERROR: {code}")


class CmsError(ModemError):
    """``+CMS ERROR: <code>``: a message service error (27.005 §3.2.5)."""

    def __init__(self, code: int | str, command: str):
        self.code = code
        super().__init__(f"{command}: +CMS ERROR: {code}")


class PortLost(ModemError):
    """The serial port failed or vanished (a USB modem re-enumerating, a cable pulled).
    ``data_sent`` as for AtTimeout."""

    data_sent = False


class PortBusy(ModemError):
    """Another program holds the modem port (our lock on it was refused)."""


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
_LINE_END = re.compile(rb"[\r\n]")

# The longest PDU line is under 400 characters (SCA, 164 octets of TPDU, in hex): a line
# longer than this is noise, whatever it holds.
MAX_LINE_BYTES = 4096
# AT+CMGL of a full 255-message store is about 100 KB; nothing else comes close.
MAX_RESPONSE_BYTES = 512 * 1024
# Bytes taken from the port at once: the reader's work per read stays small.
_READ_BYTES = 4096


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


class LineSplitter:
    """Cuts the modem's byte stream into lines at CR or LF in time linear in the bytes fed:
    each chunk is searched once, never the line it continues. A line longer than
    ``max_bytes`` is dropped whole, up to its line end, and counted in ``dropped``."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES):
        self.max_bytes = max_bytes
        self.unfinished = bytearray()  # the line begun and not yet ended
        self.dropped = 0
        self._dropping = False  # within an overlong line: its bytes go until its end

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that ``chunk`` ends (without their line ends), in order."""
        *ended, rest = _LINE_END.split(chunk)
        lines = []
        for piece in ended:
            if self._extend(piece):
                lines.append(bytes(self.unfinished))
            self.unfinished.clear()
            self._dropping = False
        self._extend(rest)
        return lines

    def _extend(self, piece: bytes) -> bool:
        """Add ``piece`` to the unfinished line; False when that line is too long."""
        if self._dropping:
            return False
        if len(self.unfinished) + len(piece) > self.max_bytes:
            self._dropping = True
            self.dropped += 1
            self.unfinished.clear()
            return False
        self.unfinished += piece
        return True


class _Pending:
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


class AtChannel:
    """A serial port that speaks AT commands.

    ``url`` is anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB2``, a pty path,
    ``spy:///dev/ttyUSB2`` to log the traffic. ``on_urc(Urc)`` is called on the reader
    thread, so it must be quick and thread-safe (put the URC on a queue, set an event).
    """

    #: How long to wait for the OK that acknowledges an ESC sent to abort a prompt.
    abort_grace_s = 2.0

    def __init__(self, url: str, baudrate: int = 115200, *,
                 on_urc: Callable[[Urc], None] | None = None,
                 on_lost: Callable[[], None] | None = None):
        self.url = url
        self.baudrate = baudrate
        self._on_urc = on_urc
        self._on_lost = on_lost  # on the reader thread, once, when the port fails
        self._serial: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._command_lock = threading.Lock()
        self._state = threading.Condition()
        self._pending: _Pending | None = None  # guarded by _state
        self._lost: str | None = None  # why the port failed; guarded by _state
        self._urc_waiting_for_pdu: str | None = None  # reader thread only
        self._lines = LineSplitter()  # reader thread only

    # --- lifetime -----------------------------------------------------------------------

    def open(self) -> "AtChannel":
        import serial  # pyserial: imported where the port is opened

        try:
            # exclusive: a second program (test-sms, check) must never talk into the
            # daemon's conversation with the modem.
            port = serial.serial_for_url(self.url, self.baudrate, timeout=0.05,
                                         write_timeout=5, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            if "exclusively lock" in str(exc):
                raise PortBusy(f"modem port {self.url} is in use by another program "
                                 "(a running edge-alarm daemon?)") from exc
            raise PortLost(f"cannot open modem port {self.url}: {exc}") from exc
        self._serial = port
        self._closing.clear()
        self._lost = None
        self._lines = LineSplitter()
        self._reader = threading.Thread(target=self._read_loop, args=(port,),
                                        name=f"at-reader {self.url}", daemon=True)
        self._reader.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._serial is not None:
            try:
                self._serial.close()
            except OSError:  # a vanished device may fail even to close
                pass
            self._serial = None
        with self._state:
            self._lost = self._lost or "closed"
            self._state.notify_all()

    def __enter__(self) -> "AtChannel":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def dropped_lines(self) -> int:
        """How many lines over MAX_LINE_BYTES the modem sent since the port was opened."""
        return self._lines.dropped

    @property
    def lost(self) -> bool:
        """True once the port has failed (or was closed): only reopening helps."""
        with self._state:
            return self._lost is not None

    # --- commands -----------------------------------------------------------------------

    def command(self, cmd: str, *, timeout: float, prompt_data: str | None = None,
                prompt_timeout: float = 10.0) -> list[str]:
        """Send ``cmd`` and return its response lines (echo and URCs left out).

        With ``prompt_data``, wait up to ``prompt_timeout`` for the ``>`` prompt, then send
        the data and Ctrl-Z; ``timeout`` then runs from the moment the data is sent.
        Raises AtTimeout, AtError, CmeError, CmsError or PortLost.
        """
        with self._command_lock:
            pending = _Pending(cmd, prompt_data)
            with self._state:
                self._raise_if_lost()
                self._pending = pending
            try:
                self._write((cmd + "\r").encode("ascii"))
                if prompt_data is not None:
                    self._send_after_prompt(pending, prompt_data, prompt_timeout)
                self._wait(lambda: pending.final is not None, timeout,
                           f"{cmd}: no final result code within {timeout:g} s")
            except (AtTimeout, PortLost) as exc:
                exc.data_sent = pending.data_sent  # the answer, not the data, was lost
                raise
            finally:
                with self._state:
                    self._pending = None
            if pending.cut:
                log.warning("%s: response of %d bytes from %s cut to its first %d",
                            cmd, pending.response_bytes, self.url, MAX_RESPONSE_BYTES)
            return self._result(pending)

    def send_raw(self, data: bytes) -> None:
        """Write bytes outside any command (ESC and CR to leave a stuck prompt)."""
        with self._command_lock:
            self._write(data)

    def _send_after_prompt(self, pending: _Pending, prompt_data: str,
                           prompt_timeout: float) -> None:
        try:
            self._wait(lambda: pending.prompt_seen or pending.final is not None,
                       prompt_timeout, f"{pending.command}: no '>' prompt within "
                                       f"{prompt_timeout:g} s; sent ESC to abort")
        except AtTimeout:
            # The modem may still be about to prompt: ESC makes it drop the message
            # instead of waiting for data, and it acknowledges with OK (some say nothing).
            with self._state:
                pending.awaiting_prompt = False  # an OK now acknowledges the ESC
            self._write(ESC)
            with self._state:
                self._state.wait_for(lambda: pending.final is not None or self._lost,
                                     self.abort_grace_s)
            raise
        if pending.final is None:
            self._write((prompt_data + CTRL_Z).encode("ascii"))
            pending.data_sent = True

    def _wait(self, done: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        with self._state:
            while not done():
                self._raise_if_lost()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AtTimeout(message)
                self._state.wait(remaining)

    def _result(self, pending: _Pending) -> list[str]:
        final = pending.final
        assert final is not None  # command() waited for it
        if final == _FINAL_OK:
            return pending.lines
        if match := _CME.match(final):
            raise CmeError(_error_code(match.group(1)), pending.command)
        if match := _CMS.match(final):
            raise CmsError(_error_code(match.group(1)), pending.command)
        raise AtError(f"{pending.command}: {final}")

    def _write(self, data: bytes) -> None:
        import serial

        with self._state:
            self._raise_if_lost()
            port = self._serial
        if port is None:
            raise PortLost(f"modem port {self.url} is not open")
        try:
            port.write(data)
            port.flush()
        except serial.SerialTimeoutException as exc:
            raise AtTimeout(f"writing to {self.url} timed out") from exc
        except (serial.SerialException, OSError) as exc:
            self._mark_lost(f"write failed: {exc}")
            raise PortLost(f"modem port {self.url} lost: {exc}") from exc

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise PortLost(f"modem port {self.url} is not usable: {self._lost}")

    def _mark_lost(self, why: str) -> None:
        with self._state:
            first = self._lost is None
            if first:
                self._lost = why
            self._state.notify_all()
        if first and self._on_lost is not None and not self._closing.is_set():
            self._on_lost()

    # --- reader thread ------------------------------------------------------------------

    def _read_loop(self, port: serial.SerialBase) -> None:
        import serial

        while not self._closing.is_set():
            try:
                chunk = port.read(min(port.in_waiting, _READ_BYTES) or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's fd vanished under a concurrent close.
                if not self._closing.is_set():
                    log.warning("modem port %s lost: %s", self.url, exc)
                    self._mark_lost(f"read failed: {exc}")
                return
            if chunk:
                self._take_chunk(chunk)

    def _take_chunk(self, chunk: bytes) -> None:
        dropped_before = self._lines.dropped
        for raw in self._lines.feed(chunk):
            self._take_line(raw)
        self._take_prompt()
        dropped = self._lines.dropped
        # Told at the 1st, 2nd, 4th, 8th… so a modem that streams them cannot flood the log.
        if dropped.bit_length() > dropped_before.bit_length():
            log.warning("dropped a line of more than %d bytes from the modem on %s "
                        "(%d so far)", MAX_LINE_BYTES, self.url, dropped)

    def _take_prompt(self) -> None:
        """Consume a ``> `` prompt that no line end follows."""
        unfinished = self._lines.unfinished
        if not unfinished.startswith(b">"):
            return
        with self._state:
            pending = self._pending
            if pending is None or not pending.awaiting_prompt:
                return
            pending.awaiting_prompt = False
            pending.prompt_seen = True
            self._state.notify_all()
        unfinished[:] = unfinished[1:].lstrip(b" ")

    def _take_line(self, raw: bytes) -> None:
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
            pending = self._pending
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

    def _sort_response_line(self, pending: _Pending, line: str) -> bool:
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
