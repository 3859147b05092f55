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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from edge.modem.pdu import PduError, decode_submit, encode_deliver

log = logging.getLogger(__name__)

_CTRL_Z = 0x1A
_ESC = 0x1B
_COMMAND = re.compile(r"AT([+^][A-Z0-9]+)(=\?|\?|=(.*))?$", re.IGNORECASE | re.DOTALL)
_CHINA_TIME = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class SentSms:
    """One PDU sent with AT+CMGS, as the network received it."""

    pdu: str
    number: str
    text: str
    concat: tuple[int, int, int] | None
    reference: int  # the <mr> answered in +CMGS


@dataclass
class _Stored:
    stat: int  # 0 received unread, 1 received read
    pdu: str


def tpdu_length(pdu_hex: str) -> int:
    """Octets after the SCA: what AT+CMGS=<n> and +CMGR: …,<n> count (-1: no SCA)."""
    try:
        return len(pdu_hex) // 2 - 1 - int(pdu_hex[:2], 16)
    except ValueError:
        return -1


class _Reply(Exception):
    """Ends a command with this final result code."""

    def __init__(self, final: str):
        self.final = final


class ModemEmulator:
    """A pty modem. Knobs (plain attributes, read at each command):

    ``echo`` (True at power-up), ``silent`` (reads and never answers), ``prompt_delay``,
    ``response_delay`` and ``send_time`` (seconds; ``send_time`` from every PDU to its
    answer, a slow network), ``signal`` (AT+CSQ rssi, 99 unknown), ``registration``
    (CREG/CEREG stat: 1 home, 5 roaming, 0/2 not registered), ``sim_present``, ``sim_pin``
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
        self._hang_ups = 0
        self._indices = range(first_index, first_index + storage_size)  # Quectel counts from 0
        self._cond = threading.Condition()  # guards everything below and writes to the pty
        self._storage: dict[int, _Stored] = {}
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
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            with self._cond:
                master = self._master
                if master is None:
                    return  # unplugged: the line is gone, as _write loses its data too
                try:
                    view = view[os.write(master, view[:65536]):]
                    continue
                except BlockingIOError:
                    pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(view)} bytes not taken within {timeout} s")
            select.select([], [master], [], 0.05)

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

    def deliver(self, sender: str, text: str, timestamp: datetime | None = None) -> list[int]:
        """An SMS arrives from the network: stored (one slot per part), each announced by
        +CMTI when AT+CNMI asked for it. Returns the storage indices."""
        with self._cond:
            reference = self._next_concat
            self._next_concat = self._next_concat % 255 + 1
        pdus = encode_deliver(sender, text, timestamp or datetime.now(_CHINA_TIME),
                              reference=reference)
        return [self.deliver_pdu(pdu) for pdu in pdus]

    def deliver_pdu(self, pdu_hex: str) -> int:
        """Store any PDU as received, well-formed or not, and announce it."""
        with self._cond:
            free = [index for index in self._indices if index not in self._storage]
            if not free:
                raise RuntimeError("the emulated modem's SMS storage is full")
            self._storage[free[0]] = _Stored(0, pdu_hex)
            if self._cnmi_mt == 1:
                self._write(f'\r\n+CMTI: "SM",{free[0]}\r\n'.encode())
            return free[0]

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
                end = next((i for i, byte in enumerate(buffer) if byte in (_CTRL_Z, _ESC)), -1)
                if end < 0:
                    return buffer
                self._take_pdu(buffer[:end], buffer[end])
                buffer = buffer[end + 1:]
                continue
            buffer = buffer.replace(bytes([_ESC]), b"")  # ESC outside a prompt: ignored
            end = buffer.find(b"\r")
            if end < 0:
                return buffer
            line, buffer = buffer[:end].decode("ascii", "replace").strip(), buffer[end + 1:]
            if line:
                self._take_command(line, stop)

    def _take_command(self, line: str, stop: threading.Event) -> None:
        with self._cond:
            self._commands.append((time.perf_counter(), line))
            if self.echo:
                self._write(line.encode() + b"\r")
        if self.response_delay:
            stop.wait(self.response_delay)
        try:
            lines = self._answer(line, stop)
        except _Reply as reply:
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
            self._write("".join(out + [f"\r\n{final}\r\n"]).encode())

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
            raise _Reply("ERROR")
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
            raise _Reply("ERROR")
        operation = {None: "exec", "?": "read", "=?": "test"}.get(match.group(2), "set")
        return handler(operation, match.group(3) or "", stop)

    # --- voice calls: ATD answers OK at once, the call's progress shows in AT+CLCC, its
    # end comes unsolicited (BUSY, NO CARRIER), as on SIM7600 and EC2x.

    def _dial(self, number: str) -> list[str]:
        if not self._registered():
            raise _Reply("NO CARRIER")
        with self._cond:
            self._calls.append(number)
            self._cond.notify_all()
            if self.call_outcome == "fail":
                raise _Reply("NO CARRIER")
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
            self._hang_ups += 1
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

    @property
    def hang_ups(self) -> int:
        with self._cond:
            return self._hang_ups

    def _cme(self, code: int) -> _Reply:
        return _Reply("ERROR" if self._cmee == 0 else f"+CME ERROR: {code}")

    @staticmethod
    def _cms(code: int) -> _Reply:
        return _Reply(f"+CMS ERROR: {code}")

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
            raise _Reply("ERROR") from None

    def _at_cmee(self, operation, args, stop):
        if operation == "set":
            (self._cmee,) = self._integers(args)[:1] or [0]
            return []
        return ["+CMEE: (0-2)"] if operation == "test" else [f"+CMEE: {self._cmee}"]

    def _at_cmgf(self, operation, args, stop):
        if operation == "set":
            mode = self._integers(args)
            if mode not in ([0], [1]):
                raise _Reply("ERROR")
            self._cmgf = mode[0]
            return []
        return ["+CMGF: (0,1)"] if operation == "test" else [f"+CMGF: {self._cmgf}"]

    def _at_cnmi(self, operation, args, stop):
        if operation == "set":
            values = self._integers(args)
            if not values or not 0 <= values[0] <= 3 or len(values) > 1 and not 0 <= values[1] <= 3:
                raise self._cms(303)
            self._cnmi_mt = values[1] if len(values) > 1 else 0
            return []
        if operation == "test":
            return ["+CNMI: (0-3),(0-3),(0-3),(0-2),(0,1)"]
        return [f"+CNMI: 2,{self._cnmi_mt},0,0,0"]

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

    def _registered(self) -> bool:
        return self._sim_ready() and self.registration in (1, 5)

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

    def _at_cpms(self, operation, args, stop):
        self._require_sim()
        if operation == "test":
            return ['+CPMS: ("SM"),("SM"),("SM")']
        used, total = len(self._storage), len(self._indices)
        if operation == "read":
            return [f'+CPMS: "SM",{used},{total},"SM",{used},{total},"SM",{used},{total}']
        if any(name.strip().strip('"').upper() != "SM" for name in args.split(",")):
            raise self._cms(302)
        return [f"+CPMS: {used},{total},{used},{total},{used},{total}"]

    def _index(self, args: str) -> int:
        values = self._integers(args)
        if not values or values[0] not in self._indices:
            raise self._cms(321)
        return values[0]

    def _at_cmgr(self, operation, args, stop):
        self._require_sim()
        if operation != "set" or self._cmgf != 0:
            raise self._cms(302)
        index = self._index(args)
        with self._cond:
            stored = self._storage.get(index)
            if stored is None:
                return []  # an empty slot: OK and nothing (SIM800)
            line = f"+CMGR: {stored.stat},,{tpdu_length(stored.pdu)}"
            stored.stat = 1
        return [line, stored.pdu]

    def _at_cmgd(self, operation, args, stop):
        self._require_sim()
        if operation != "set":
            raise _Reply("ERROR")
        index = self._index(args)
        values = self._integers(args)
        with self._cond:
            if len(values) > 1 and values[1] == 4:
                self._storage.clear()
            else:
                self._storage.pop(index, None)
        return []

    def _at_cmgl(self, operation, args, stop):
        self._require_sim()
        if operation != "set" or self._cmgf != 0:
            raise self._cms(302)
        (wanted,) = self._integers(args)[:1] or [0]
        if not 0 <= wanted <= 4:
            raise self._cms(302)
        lines = []
        with self._cond:
            for index, stored in sorted(self._storage.items()):
                if wanted in (4, stored.stat):
                    lines += [f"+CMGL: {index},{stored.stat},,{tpdu_length(stored.pdu)}",
                              stored.pdu]
                    stored.stat = 1
        return lines

    def _at_cmgs(self, operation, args, stop):
        self._require_sim()
        if operation != "set" or self._cmgf != 0:
            raise self._cms(302)
        length = self._integers(args)
        if len(length) != 1 or not 7 <= length[0] <= 164:
            raise self._cms(304)
        with self._cond:
            failure = self._send_failures[0] if self._send_failures else None
            if failure is not None and failure >= 500:
                self._send_failures.pop(0)
                raise self._cms(failure)
        if self.prompt_delay and stop.wait(self.prompt_delay):
            return None  # unplugged while the network was slow: no prompt ever came
        with self._cond:
            self._prompt_length = length[0]
            self._write(b"\r\n> ")
        return None

    def _take_pdu(self, data: bytes, terminator: int) -> None:
        length, self._prompt_length = self._prompt_length, None
        with self._cond:
            delay, self._send_answer_delay = max(self._send_answer_delay, self.send_time), 0.0
        if delay and terminator != _ESC:
            self._stop.wait(delay)
        if terminator == _ESC:
            with self._cond:
                self._commands.append((time.perf_counter(), "<ESC>"))
            self._respond([], "OK")  # abort acknowledged; nothing is sent
            return
        pdu = data.decode("ascii", "replace").strip().upper()
        with self._cond:
            if self.echo:
                self._write(data + b"\r\n")
            failure = self._send_failures.pop(0) if self._send_failures else None
        try:
            if failure is not None:
                raise self._cms(failure)
            lines = [f"+CMGS: {self._record(pdu, length)}"]
        except _Reply as reply:
            self._respond([], reply.final)
            return
        with self._cond:
            lost = self._answers_to_lose > 0
            self._answers_to_lose -= lost
        if not lost:
            self._respond(lines, "OK")

    def _record(self, pdu: str, length: int | None) -> int:
        """Check a sent PDU as a modem and the network would; the message reference."""
        if not re.fullmatch(r"(?:[0-9A-F]{2})+", pdu) or tpdu_length(pdu) != length:
            raise self._cms(304)  # invalid PDU mode parameter
        if pdu.startswith("00") and not self.smsc:
            raise self._cms(330)  # SMSC address unknown
        try:
            number, text, concat = decode_submit(pdu)
        except PduError:
            raise self._cms(304) from None
        with self._cond:
            reference = self._next_mr
            self._next_mr = self._next_mr % 255 + 1
            self._sent.append(SentSms(pdu, number, text, concat, reference))
            self._cond.notify_all()
        return reference
