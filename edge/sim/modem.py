"""A GSM modem emulated on a pseudo-terminal, for tests and for ``edge-alarm demo``.

The driver opens ``emulator.port`` (a symlink in a temp dir, like a udev name) exactly as it
opens /dev/ttyUSB2. A thread answers AT commands as SIM7600 / SIM800-class modems do: echo on
at power-up, numeric or bare errors depending on AT+CMEE, the ``> `` prompt of AT+CMGS with
no line end after it, +CMS ERROR: 304 for a PDU whose length is not the announced one.
Sent SMS are decoded (pdu.decode_submit) and recorded; ``deliver()`` plays the network side
of an incoming SMS. The misbehaviours of real modems are knobs settable at any time from
another thread; ``unplug()`` / ``replug()`` play a USB modem re-enumerating.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shutil
import tempfile
import threading
import time
import tty

from edge.sim.modem_base import CTRL_Z, ESC, Reply, SentSms, Stored
from edge.sim.modem_calls import CallAnswers
from edge.sim.modem_network import NetworkAnswers
from edge.sim.modem_sms import SmsAnswers

__all__ = ["ModemEmulator", "SentSms"]  # importable from here as before

log = logging.getLogger(__name__)

# How long an answer waits for the driver to read what is before it on the line.
ANSWER_WAIT_S = 5.0

_COMMAND = re.compile(r"AT([+^][A-Z0-9]+)(=\?|\?|=(.*))?$", re.IGNORECASE | re.DOTALL)


class ModemEmulator(NetworkAnswers, SmsAnswers, CallAnswers):
    """A pty modem. Knobs (plain attributes, read at each command):

    ``echo`` (True at power-up), ``silent`` (reads and never answers), ``prompt_delay``,
    ``response_delay`` and ``send_time`` (seconds; ``send_time`` from every PDU to its
    answer, a slow network), ``signal`` (AT+CSQ rssi, 99 unknown), ``registration``
    (CREG/CEREG stat: 1 home, 5 roaming, 0/2 not registered; a PDU sent meanwhile gets
    +CMS ERROR: 331, no network service), ``sim_present``, ``sim_pin``
    (asked at power-up when not empty), ``smsc`` ("" for an empty one), ``call_outcome``
    (what the called phone does with ``ATD<number>;``: "no answer" rings until hung up,
    "answer" picks up, "busy" ends in BUSY, "fail" refuses the dial with NO CARRIER) and
    ``call_progress_s`` (from the dial to the phone's answer or BUSY).
    Methods: ``fail_next_sends``, ``lose_next_send_answer``, ``urc_in_next_response``,
    ``refuse``, ``inject``, ``deliver``, ``deliver_pdu``, ``wait_sent``, ``unplug``,
    ``replug``.
    """

    def __init__(self, *, model: str = "SIM7600E-H", sim_pin: str = "",
                 smsc: str = "+8613800100500", operator: str = "CHINA MOBILE",
                 signal: int = 20, storage_size: int = 30, first_index: int = 0,
                 dir: str | None = None):
        self.model = model
        self.operator = operator
        self.echo = True
        self.silent = False
        self.prompt_delay = 0.0
        self.response_delay = 0.0
        self.send_time = 0.0
        self.signal = signal
        self.registration = 1
        self.sim_present = True
        self.sim_pin = sim_pin
        self.smsc = smsc
        self.iccid = "89860012345678901234"  # the SIM card's own number (AT+CCID)
        self.call_outcome = "no answer"
        self.call_progress_s = 0.3
        self._call: dict | None = None  # the voice call: number, <stat> (27.007 +CLCC)
        self._calls: list[str] = []  # every number dialled
        self._indices = range(first_index, first_index + storage_size)  # Quectel counts from 0
        self._cond = threading.Condition()  # guards everything below and writes to the pty
        self._storage: dict[int, Stored] = {}
        self._sent: list[SentSms] = []
        self._commands: list[tuple[float, str]] = []  # (time.perf_counter(), line)
        self._send_failures: list[int | None] = []  # None: this send goes through
        self._send_answer_delay = 0.0
        self._answers_to_lose = 0
        self._urcs_in_response: list[str] = []
        self._refused: set[str] = set()
        self._pin_attempts = 0
        self._next_mr = 1
        self._next_concat = 1
        self._dir = tempfile.mkdtemp(prefix="edge-modem-", dir=dir)  # the port link lives here
        self.port = os.path.join(self._dir, "ttyUSB2")
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._power_up()

    # --- lifetime -----------------------------------------------------------------------

    def start(self) -> "ModemEmulator":
        self.replug()
        return self

    def close(self) -> None:
        self.unplug()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "ModemEmulator":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def unplug(self) -> None:
        """The USB modem goes away: its tty closes under the driver, its name disappears."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with self._cond:
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
        try:
            os.unlink(self.port)
        except FileNotFoundError:
            pass

    def replug(self) -> None:
        """The modem comes back (powered up afresh) on a new tty under the same name."""
        self.unplug()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)  # a full tty buffer drops output instead of hanging
        link = self.port + ".new"
        os.symlink(os.ttyname(slave), link)
        os.replace(link, self.port)
        with self._cond:
            self._master, self._slave = master, slave
            self._power_up()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(master, self._stop),
                                        name="modem-emulator", daemon=True)
        self._thread.start()

    def _power_up(self) -> None:
        self.echo = True
        self._cmee = 0
        self._cmgf = 0
        self._cnmi_mt = 0
        self._pin_entered = False
        self._prompt_length: int | None = None

    # --- knobs and observations ---------------------------------------------------------

    def fail_next_sends(self, *codes: int, after: int = 0) -> None:
        """After ``after`` more sends that go through, the next AT+CMGS get +CMS ERROR:
        code, one code each. Codes from 500 on (busy, unknown) come at once instead of the
        prompt, the others after the PDU."""
        with self._cond:
            self._send_failures.extend([None] * after + list(codes))

    def delay_next_send_answer(self, seconds: float) -> None:
        """The next AT+CMGS answers ``seconds`` after its PDU (a slow network); the modem
        takes no other command meanwhile, as a real one does not."""
        with self._cond:
            self._send_answer_delay = seconds

    def lose_next_send_answer(self) -> None:
        """The next PDU goes to the network (recorded in ``sent``) but its +CMGS and OK
        never reach the driver: a modem that hangs or vanishes right after sending."""
        with self._cond:
            self._answers_to_lose += 1

    def urc_in_next_response(self, line: str) -> None:
        """Put ``line`` between the next command's echo/intermediate lines and its OK."""
        with self._cond:
            self._urcs_in_response.append(line)

    def refuse(self, *commands: str) -> None:
        """Answer ERROR to these exact command lines (an LTE-only module's AT+CREG?…)."""
        with self._cond:
            self._refused.update(command.upper() for command in commands)

    def inject(self, data: bytes) -> None:
        """Write raw bytes on the line: a URC, line noise, garbage."""
        with self._cond:
            self._write(data)

    def stream(self, data: bytes, timeout: float = 60.0) -> None:
        """Write every byte of ``data`` on the line as fast as the driver reads it (inject
        drops what the tty cannot hold); TimeoutError if that takes over ``timeout`` s."""
        left = self._write_all(data, timeout)
        if left:
            raise TimeoutError(f"{left} bytes not taken within {timeout} s")

    @property
    def sent(self) -> list[SentSms]:
        with self._cond:
            return list(self._sent)

    @property
    def commands(self) -> list[str]:
        """Every command line received, in order; "<ESC>" for an aborted prompt."""
        with self._cond:
            return [line for _, line in self._commands]

    @property
    def timed_commands(self) -> list[tuple[float, str]]:
        """(time.perf_counter() when its line end arrived, line) of every command."""
        with self._cond:
            return list(self._commands)

    @property
    def pin_attempts(self) -> int:
        """Wrong PINs given to the SIM (three lock it)."""
        with self._cond:
            return self._pin_attempts

    @property
    def stored(self) -> dict[int, str]:
        """Index -> PDU of the messages in the modem's storage."""
        with self._cond:
            return {index: stored.pdu for index, stored in self._storage.items()}

    def wait_sent(self, count: int, timeout: float) -> list[SentSms]:
        """Wait until ``count`` PDUs have been sent; TimeoutError if they are not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._sent) >= count, timeout):
                raise TimeoutError(f"{len(self._sent)} SMS sent, not {count}, "
                                   f"within {timeout} s")
            return list(self._sent)

    # --- the modem's thread -------------------------------------------------------------

    def _serve(self, master: int, stop: threading.Event) -> None:
        buffer = b""
        while not stop.is_set():
            readable, _, _ = select.select([master], [], [], 0.05)
            if not readable:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO while no one has the tty open
                stop.wait(0.05)
                continue
            if self.silent:
                continue  # a hung modem: takes the bytes, says nothing
            buffer = self._take(buffer + data, stop)

    def _take(self, buffer: bytes, stop: threading.Event) -> bytes:
        while True:
            if self._prompt_length is not None:
                end = next((i for i, byte in enumerate(buffer) if byte in (CTRL_Z, ESC)), -1)
                if end < 0:
                    return buffer
                self._take_pdu(buffer[:end], buffer[end])
                buffer = buffer[end + 1:]
                continue
            buffer = buffer.replace(bytes([ESC]), b"")  # ESC outside a prompt: ignored
            end = buffer.find(b"\r")
            if end < 0:
                return buffer
            line, buffer = buffer[:end].decode("ascii", "replace").strip(), buffer[end + 1:]
            if line:
                self._take_command(line, stop)

    def _take_command(self, line: str, stop: threading.Event) -> None:
        with self._cond:
            self._commands.append((time.perf_counter(), line))
            echo = line.encode() + b"\r" if self.echo else b""
        self._answer_on_line(echo)
        if self.response_delay:
            stop.wait(self.response_delay)
        try:
            lines = self._answer(line, stop)
        except Reply as reply:
            self._respond([], reply.final)
            return
        except Exception:  # a bug here must not leave the driver without an answer
            log.exception("emulated modem failed on %r", line)
            self._respond([], "ERROR")
            return
        if lines is not None:  # None: a prompt is open
            self._respond(lines, "OK")

    def _respond(self, lines: list[str], final: str) -> None:
        with self._cond:
            out = [f"\r\n{line}\r\n" for line in lines]
            out += [f"\r\n{urc}\r\n" for urc in self._urcs_in_response]
            self._urcs_in_response.clear()
        self._answer_on_line("".join(out + [f"\r\n{final}\r\n"]).encode())

    def _answer_on_line(self, data: bytes) -> None:
        """An echo or a response: like a real modem's, it waits behind what the driver
        has not read yet (a long stream), and is lost only when nobody reads at all."""
        left = self._write_all(data, ANSWER_WAIT_S)
        if left:
            log.debug("emulated modem answer lost: %d bytes not read within %g s", left,
                      ANSWER_WAIT_S)

    def _write_all(self, data: bytes, timeout: float) -> int:
        """Write ``data`` as fast as the driver reads it, for at most ``timeout`` s;
        returns how many bytes it did not take (none when the line is unplugged or closed:
        that loses the data, as _write does)."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            with self._cond:
                master = self._master
                if master is None:
                    return 0
                try:
                    view = view[os.write(master, view[:65536]):]
                    continue
                except BlockingIOError:
                    pass
                except OSError as exc:
                    log.debug("emulated modem output lost: %s", exc)
                    return 0
            if time.monotonic() >= deadline:
                return len(view)
            select.select([], [master], [], 0.05)
        return 0

    def _write(self, data: bytes) -> None:
        """Holding _cond. A full buffer (nobody reading) or a closed tty loses the data."""
        if self._master is None:
            return
        try:
            os.write(self._master, data)
        except OSError as exc:
            log.debug("emulated modem output lost: %s", exc)

    # --- commands -----------------------------------------------------------------------

    def _answer(self, line: str, stop: threading.Event) -> list[str] | None:
        upper = line.upper()
        if upper in self._refused or not upper.startswith("AT"):
            raise Reply("ERROR")
        rest = line[2:]
        if rest == "":
            return []
        if rest.upper() in ("E0", "E1"):
            self.echo = rest.endswith("1")
            return []
        if rest.upper() == "I":
            return ["SIMCOM INCORPORATED", self.model, "Revision: emulated"]
        if rest.upper().startswith("D") and rest.endswith(";"):
            return self._dial(rest[1:-1])
        if rest.upper() == "H":
            return self._at_chup("exec", "", stop)
        match = _COMMAND.match(line)
        handler = match and getattr(self, f"_at_{match.group(1)[1:].lower()}", None)
        if match is None or handler is None:
            raise Reply("ERROR")
        operation = {None: "exec", "?": "read", "=?": "test"}.get(match.group(2), "set")
        return handler(operation, match.group(3) or "", stop)
