"""The AT command channel (3GPP TS 27.007 / 27.005) over a serial port.

One reader thread owns the port's input. It cuts the byte stream into lines (lines.py) and
hands each to the demux (demux.py), which sorts it into the pending command's response or
an unsolicited result code (URC) for ``on_urc``. The ``> `` prompt of AT+CMGS comes
without a line end, so the demux also looks at the unfinished line while a prompt is
awaited.

Every command has a hard deadline, and one command runs at a time. What the modem sends is
bounded too: a line over MAX_LINE_BYTES is dropped, a response over MAX_RESPONSE_BYTES cut,
so a modem that streams bytes for hours costs no more memory than a silent one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from edge.modem.at.demux import CTRL_Z, MAX_RESPONSE_BYTES, Pending, Urc, UrcDemux
from edge.modem.at.errors import AtTimeout, PortBusy, PortLost
from edge.modem.at.lines import MAX_LINE_BYTES, LineSplitter

if TYPE_CHECKING:
    import serial  # pyserial: imported at run time where the port is opened

log = logging.getLogger(__name__)

ESC = b"\x1b"
# Bytes taken from the port at once: the reader's work per read stays small.
_READ_BYTES = 4096
# The reader waits this long for a byte before it looks whether it should stop. close()
# wakes it at once where pyserial can (cancel_read, a posix port), so this only bounds the
# wake-ups of an idle modem (at 0.05 s they were most of an idle daemon's CPU).
READ_TIMEOUT_S = 1.0


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
        self._on_lost = on_lost  # on the reader thread, once, when the port fails
        self._serial: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._command_lock = threading.Lock()
        self._state = threading.Condition()
        self._lost: str | None = None  # why the port failed; guarded by _state
        self._demux = UrcDemux(url, self._state, on_urc)
        self._lines = LineSplitter()  # reader thread only

    # --- lifetime -----------------------------------------------------------------------

    def open(self) -> "AtChannel":
        import serial  # pyserial: imported where the port is opened

        try:
            # exclusive: a second program (test-sms, check) must never talk into the
            # daemon's conversation with the modem.
            port = serial.serial_for_url(self.url, self.baudrate, timeout=READ_TIMEOUT_S,
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
        cancel_read = getattr(self._serial, "cancel_read", None)
        if cancel_read is not None:
            try:
                cancel_read()
            except OSError:  # a port whose device vanished: its read ends by itself
                pass
        if self._reader is not None:
            self._reader.join(timeout=READ_TIMEOUT_S + 1)
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
            pending = Pending(cmd, prompt_data)
            with self._state:
                self._raise_if_lost()
                self._demux.pending = pending
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
                    self._demux.pending = None
            if pending.cut:
                log.warning("%s: response of %d bytes from %s cut to its first %d",
                            cmd, pending.response_bytes, self.url, MAX_RESPONSE_BYTES)
            return pending.result()

    def send_raw(self, data: bytes) -> None:
        """Write bytes outside any command (ESC and CR to leave a stuck prompt)."""
        with self._command_lock:
            self._write(data)

    def _send_after_prompt(self, pending: Pending, prompt_data: str,
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
            self._demux.take_line(raw)
        self._demux.take_prompt(self._lines.unfinished)
        dropped = self._lines.dropped
        # Told at the 1st, 2nd, 4th, 8th… so a modem that streams them cannot flood the log.
        if dropped.bit_length() > dropped_before.bit_length():
            log.warning("dropped a line of more than %d bytes from the modem on %s "
                        "(%d so far)", MAX_LINE_BYTES, self.url, dropped)

