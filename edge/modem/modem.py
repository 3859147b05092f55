"""A GSM modem (SIM7600, Quectel EC2x, Air780, SIM800…) for sending and receiving SMS.

Threading: a Modem belongs to one worker thread, which calls every method; nothing here is
called from the daemon's owner thread, and a slow or hung modem blocks only that worker.
The channel's reader thread only queues the indices of new messages (+CMTI) and passes
every URC to ``on_urc``.

Recovery is the worker's loop calling ``ensure_ready()`` before each piece of work: it
reopens a lost port (a USB modem re-enumerates) and re-initialises a modem that stopped
answering, with a growing pause between attempts, and raises ModemError until it succeeds.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from edge.errors import ModemError
from edge.modem.at import (AtChannel, AtError, AtTimeout, CmeError, CmsError, PortBusy,
                           PortLost, Urc)
from edge.modem.pin_record import FILE_NAME as PIN_RECORD_FILE
from edge.modem.pin_record import RefusedPinRecord
from edge.modem.pdu import Deliver, PduError, Reassembler, SubmitPdu, decode_deliver, encode_submit

log = logging.getLogger(__name__)

# Consecutive timeouts after which the modem is re-initialised.
MAX_TIMEOUTS = 3
UNKNOWN_REFERENCE = -1  # a part the network took whose +CMGS reference we never read
# CME 14 "SIM busy", CMS 314 "SIM busy", CMS 515 "please wait, init or command processing".
_BUSY = {("cme", 14), ("cms", 314), ("cms", 515)}
_SIM_MISSING_CME = {10, 13, 15}  # not inserted, failure, wrong
_SIM_LOCKED_CME = {11: "SIM PIN", 12: "SIM PUK"}
_CME_INCORRECT_PASSWORD = 16
_CMS_SMSC_UNKNOWN = 330
_CMS_INVALID_INDEX = 321
_RECEIVED = {"0", "1"}  # <stat> in PDU mode: received unread, received read
_CNMI_SETTINGS = ("2,1,0,0,0", "2,1", "1,1,0,0,0", "1,1")  # +CMTI for each new SMS
_STORAGES = ("SM", "ME", "MT")  # SIM first: every modem has it
# New-message indexes (+CMTI) kept until read: more than any SMS storage holds. Beyond it
# the oldest go, and the next receive() lists the whole inbox instead.
MAX_ANNOUNCED = 256
# New messages read per receive(): an SMS flood is read between sends, never ahead of the
# alarm SMS waiting behind it.
MAX_READ_PER_CALL = 8
# Voice calls (27.007 §6.1, §7.18): what ends a call, as the call's result.
CALL_ENDS = {"BUSY": "busy", "NO ANSWER": "no answer", "NO CARRIER": "no answer",
             "NO DIALTONE": "failed"}
_CLCC_ACTIVE = "0"  # +CLCC <stat>: 0 active (answered), 2 dialling, 3 alerting
CALL_POLL_S = 1.0  # AT+CLCC asked this often while a call rings


@dataclass(frozen=True)
class ModemTimings:
    """Deadlines and pauses, in seconds. Tests shorten them; the defaults suit real networks."""

    command_s: float = 5.0
    # From the PDU's Ctrl-Z to +CMGS: the network can be slow; Quectel gives AT+CMGS up to
    # 120 s, and an answer that comes after we stopped waiting confuses the next send.
    send_s: float = 120.0
    prompt_s: float = 10.0  # for the '>' of AT+CMGS
    list_s: float = 30.0  # AT+CMGL on a full SIM
    settle_s: float = 0.3  # after ESC + CR at init: let the answers to them drain
    sim_ready_s: float = 10.0  # for the SIM to be ready after power-up or its PIN
    busy_retry_s: float = 2.0  # first pause after "busy", doubled each time
    busy_retries: int = 3
    reopen_first_s: float = 1.0  # first pause after a failed reopen or init, doubled
    reopen_max_s: float = 60.0


@dataclass(frozen=True)
class ModemHealth:
    """``reason`` when not ok: "sim_missing", "sim_pin", "not_registered", "signal_unknown",
    "signal_low", "silent" (no answer, or no sensible one), "port_gone" or "smsc_empty". ``signal`` is the AT+CSQ rssi
    (0-31), None when unknown (99)."""

    ok: bool
    reason: str | None
    signal: int | None
    registered: bool
    operator: str | None


def _fields(line: str) -> list[str]:
    """'+CSQ: 20,99' -> ['20', '99']; quotes are removed."""
    _, _, rest = line.partition(":")
    return [field.strip().strip('"') for field in rest.split(",")]


def _first(lines: list[str], prefix: str) -> str | None:
    return next((line for line in lines if line.startswith(prefix)), None)


def _is_busy(exc: ModemError) -> bool:
    kind = "cme" if isinstance(exc, CmeError) else "cms" if isinstance(exc, CmsError) else None
    return (kind, getattr(exc, "code", None)) in _BUSY


class Modem:
    """The SMS modem on ``url`` (``/dev/ttyUSB2``, a pty path, ``spy://…``).

    ``smsc``: the SMS centre number to put in every PDU, for SIMs whose own is empty.
    ``on_urc(Urc)`` is called on the channel's reader thread for every URC.
    """

    def __init__(self, url: str, baudrate: int = 115200, sim_pin: str = "", *,
                 smsc: str | None = None, on_urc: Callable[[Urc], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 min_signal: int = 5, timings: ModemTimings = ModemTimings(),
                 clock: Callable[[], float] = time.monotonic,
                 pin_record: RefusedPinRecord | None = None):
        self.url = url
        self.baudrate = baudrate
        self.sim_pin = sim_pin
        self.pin_record = pin_record
        self.smsc = smsc or None
        self.min_signal = min_signal
        self.timings = timings
        self.last_health: ModemHealth | None = None
        self._on_urc = on_urc
        self._on_lost = on_lost
        self._clock = clock
        self._channel: AtChannel | None = None
        self._lines_dropped_before = 0  # by the channels closed so far
        self._needs_init = True
        self._timeouts = 0
        self._pin_refused: str | None = None
        self._smsc_empty = False
        self._retry_at = 0.0
        self._backoff = timings.reopen_first_s
        self._problem = "not opened yet"
        # Appended by the reader thread; _announced_lost set when the oldest had to go.
        self._announced: collections.deque[int] = collections.deque(maxlen=MAX_ANNOUNCED)
        self._announced_lost = False
        self._reassembler = Reassembler()
        self._call_end: str | None = None  # set by the reader thread: BUSY, NO CARRIER…

    @classmethod
    def from_config(cls, cfg, **kwargs) -> "Modem":
        """The modem of a configuration's ``[modem]`` section, a refused PIN remembered
        beside its event store; ``kwargs`` as __init__."""
        m = cfg.modem
        return cls(m.port, m.baudrate, m.sim_pin, smsc=m.smsc or None,
                   min_signal=m.min_signal,
                   pin_record=RefusedPinRecord(cfg.storage.path / PIN_RECORD_FILE), **kwargs)

    # --- lifetime and recovery ----------------------------------------------------------

    def open(self) -> None:
        """Open the port (raises PortLost when it is not there). ``init()`` comes next."""
        self.close()
        self._channel = AtChannel(self.url, self.baudrate, on_urc=self._handle_urc,
                                  on_lost=self._on_lost).open()
        self._needs_init = True

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._lines_dropped_before += self._channel.dropped_lines
            self._channel = None

    @property
    def lines_dropped(self) -> int:
        """Lines over the reader's bound the modem sent since this Modem was made (each
        reopening starts a new channel; the count goes on)."""
        current = self._channel.dropped_lines if self._channel is not None else 0
        return self._lines_dropped_before + current

    def __enter__(self) -> "Modem":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def needs_init(self) -> bool:
        """True when the next ``ensure_ready()`` will reopen or re-initialise."""
        return self._channel is None or self._channel.lost or self._needs_init

    @property
    def retry_in(self) -> float:
        """Seconds before ``ensure_ready()`` tries again after a failure (0: now)."""
        return max(0.0, self._retry_at - self._clock())

    def ensure_ready(self) -> None:
        """Make the modem usable: reopen the port, re-initialise; quick when all is well.

        Raises ModemError when it cannot (yet): after a failure it waits ``retry_in``
        (1 s, 2 s, 4 s… up to ``reopen_max_s``) before touching the port again, so the
        worker may call it in a loop.
        """
        if self._pin_refused:
            raise ModemError(self._pin_refused)
        if not self.needs_init:
            return
        if self.retry_in > 0:
            raise ModemError(f"modem on {self.url} not ready ({self._problem}); "
                             f"next attempt in {self.retry_in:.1f} s")
        try:
            if self._channel is None or self._channel.lost:
                self.open()
            self.init()
        except ModemError as exc:
            self._problem = str(exc)
            self._retry_at = self._clock() + self._backoff
            self._backoff = min(2 * self._backoff, self.timings.reopen_max_s)
            raise
        self._backoff = self.timings.reopen_first_s
        self._retry_at = 0.0

    def init(self) -> ModemHealth:
        """Bring an open modem into the state this driver relies on; returns its health.

        Raises ModemError when SMS cannot work at all (silent modem, SIM missing or locked).
        """
        channel = self._require_channel()
        # ESC leaves a '>' prompt left open by a crash; CR ends a half-typed command line.
        channel.send_raw(b"\x1b\r")
        time.sleep(self.timings.settle_s)
        self._wake()
        self._at("ATE0")  # some modems echo once more: the channel drops echoes anyway
        self._at("AT+CMEE=1")  # numeric +CME ERROR codes instead of a bare ERROR
        self._unlock_sim()
        self._at("AT+CMGF=0")
        try:  # phonebook names in +CMGR/+CMGL headers as plain ASCII, not raw GSM bytes
            self._at('AT+CSCS="IRA"')
        except (AtError, CmeError, CmsError):
            pass  # not every modem has it; PDU mode does not need it
        self._enable_new_message_indication()
        self._choose_storage()
        self._needs_init = False
        self._timeouts = 0
        health = self.health()
        if health.ok:
            log.info("modem on %s ready: signal %s, operator %s", self.url, health.signal,
                     health.operator)
        else:
            log.warning("modem on %s initialised but unhealthy: %s", self.url, health.reason)
        return health

    def _wake(self) -> None:
        for attempt in range(1, MAX_TIMEOUTS + 1):
            try:
                self._at("AT")
                return
            except AtTimeout:
                if attempt == MAX_TIMEOUTS:
                    raise
            except AtError:  # the remains of a command line: the modem is alive
                return

    def _unlock_sim(self) -> None:
        state = self._wait_sim_state()
        if state == "READY":
            return
        if state == "MISSING":
            raise ModemError(f"no usable SIM card in the modem on {self.url}")
        if state != "SIM PIN":
            raise ModemError(f"SIM card is locked ({state}); unlock it in a phone")
        if not self.sim_pin:
            raise ModemError("SIM card asks for a PIN and [modem] sim_pin is empty")
        card = self._card_id()
        if self.pin_record is not None and self.pin_record.refused(card, self.sim_pin):
            self._pin_refused = (
                "SIM card refused the configured PIN before (noted in "
                f"{self.pin_record.path}); not tried again, to keep the SIM from locking: "
                "correct [modem] sim_pin (a new PIN is tried once)")
            raise ModemError(self._pin_refused)
        try:
            self._at(f'AT+CPIN="{self.sim_pin}"')
        except (AtError, CmeError) as exc:
            # A SIM locks itself after three wrong PINs: this one is not sent again by this
            # process, and a card's "incorrect password" not by any later one either.
            if (self.pin_record is not None and isinstance(exc, CmeError)
                    and exc.code == _CME_INCORRECT_PASSWORD):
                self.pin_record.record(card, self.sim_pin)
            self._pin_refused = (f"SIM card refused the configured PIN ({exc}); not retried, "
                                 "to keep the SIM from locking: correct [modem] sim_pin")
            raise ModemError(self._pin_refused) from exc
        if self.pin_record is not None:
            self.pin_record.clear()
        if self._wait_sim_state() != "READY":
            raise ModemError("SIM card accepted its PIN but did not become ready")

    def _card_id(self) -> str:
        """The SIM's ICCID (readable before its PIN), "" when the modem will not say."""
        try:
            lines = self._at("AT+CCID")
        except ModemError:
            return ""
        digits = re.search(r"[0-9A-Fa-f]{18,22}", " ".join(lines))
        return digits.group(0).upper() if digits else ""

    def _wait_sim_state(self) -> str:
        """The SIM's state once it is no longer busy starting up."""
        deadline = self._clock() + self.timings.sim_ready_s
        while True:
            state = self._sim_state()
            if state != "BUSY" or self._clock() >= deadline:
                return state
            time.sleep(0.2)

    def _sim_state(self) -> str:
        """"READY", "SIM PIN", "SIM PUK"…, "MISSING" or "BUSY"."""
        try:
            line = _first(self._at("AT+CPIN?"), "+CPIN:")
        except CmeError as exc:
            if exc.code in _SIM_MISSING_CME:
                return "MISSING"
            if exc.code in _SIM_LOCKED_CME:
                return _SIM_LOCKED_CME[exc.code]
            if _is_busy(exc):
                return "BUSY"
            raise
        if line is None:
            raise ModemError("AT+CPIN? answered OK without +CPIN:")
        return line.partition(":")[2].strip().upper()

    def _enable_new_message_indication(self) -> None:
        for setting in _CNMI_SETTINGS:
            try:
                self._at(f"AT+CNMI={setting}")
                return
            except (AtError, CmeError, CmsError) as exc:
                log.info("modem refused AT+CNMI=%s (%s); trying a simpler one", setting, exc)
        log.warning("modem refused every AT+CNMI: new SMS are only found by listing them")

    def _choose_storage(self) -> None:
        try:
            line = _first(self._at("AT+CPMS=?"), "+CPMS:") or ""
        except (AtError, CmeError, CmsError) as exc:
            log.info("modem does not list its SMS storages (%s); keeping its default", exc)
            return
        first_group = re.search(r"\(([^)]*)\)", line)
        offered = re.findall(r'"(\w+)"', first_group.group(1)) if first_group else []
        storage = next((name for name in _STORAGES if name in offered), None)
        if storage is None:
            log.warning("modem offers no known SMS storage (%s); keeping its default", line)
            return
        self._at(f'AT+CPMS="{storage}","{storage}","{storage}"')

    # --- health -------------------------------------------------------------------------

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

    # --- sending ------------------------------------------------------------------------

    def send_sms(self, number: str, text: str, *, reference: int, max_parts: int = 4,
                 sent: list[int] | None = None) -> list[int]:
        """Send ``text`` (up to ``max_parts`` concatenated parts); returns the +CMGS
        message reference of each part. ``reference`` (0..255) ties the parts together.

        ``sent`` is the caller's record of the parts that went out, one +CMGS reference
        each, appended to as they go: when a part fails the rest raise, and a retry with
        the same list and ``reference`` sends only the parts still missing, so the phone
        joins them into the one message instead of showing a torn one and a whole one.
        """
        if self._smsc_empty and self.smsc is None:
            raise ModemError("cannot send SMS: the modem's SMS centre (AT+CSCA?) is empty "
                             "and [modem] smsc is not set")
        parts = encode_submit(number, text, reference=reference, max_parts=max_parts,
                              smsc=self.smsc)
        sent = [] if sent is None else sent
        for part in parts[len(sent):]:
            sent.append(self._send_part(part))
        return sent

    # --- voice calls ----------------------------------------------------------------------

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

    def _send_part(self, part: SubmitPdu) -> int:
        pause = self.timings.busy_retry_s
        for attempt in range(self.timings.busy_retries + 1):
            try:
                lines = self._at(f"AT+CMGS={part.tpdu_length}", timeout=self.timings.send_s,
                                 prompt_data=part.hex)
                break
            except (CmeError, CmsError) as exc:
                if isinstance(exc, CmsError) and exc.code == _CMS_SMSC_UNKNOWN:
                    self._smsc_empty = True
                if not _is_busy(exc) or attempt == self.timings.busy_retries:
                    raise
                log.info("modem busy (%s); sending again in %g s", exc, pause)
                time.sleep(pause)
                pause *= 2
        # OK is the network's acceptance; the +CMGS line before it only numbers the
        # message. One lost to line noise, or left empty, must not make the SMS go again.
        line = _first(lines, "+CMGS:") or ""
        try:
            return int(_fields(line)[0])
        except ValueError:
            log.warning("AT+CMGS answered OK without a message reference (%r): sent, "
                        "reference unknown", lines)
            return UNKNOWN_REFERENCE

    # --- receiving ----------------------------------------------------------------------

    def read_message(self, index: int) -> Deliver | None:
        """The received message at ``index``; None for an empty slot, a message that is
        not a received one, or a malformed PDU (which is deleted)."""
        try:
            lines = self._at(f"AT+CMGR={index}")
        except CmsError as exc:
            if exc.code == _CMS_INVALID_INDEX:
                return None
            raise
        for position, line in enumerate(lines[:-1]):
            if line.startswith("+CMGR:"):
                return self._received(index, _fields(line)[0], lines[position + 1])
        return None

    def delete_message(self, index: int) -> None:
        self._at(f"AT+CMGD={index}")

    def list_messages(self) -> list[tuple[int, Deliver]]:
        """Every received message in storage, e.g. those that came while we were down."""
        lines = self._at("AT+CMGL=4", timeout=self.timings.list_s)
        found = []
        for position, line in enumerate(lines[:-1]):
            if not line.startswith("+CMGL:"):
                continue
            fields = _fields(line)
            try:
                index = int(fields[0])
            except ValueError:
                log.warning("unreadable modem line %r", line)
                continue
            message = self._received(index, fields[1], lines[position + 1])
            if message is not None:
                found.append((index, message))
        return found

    def receive(self, now: float, *, scan: bool = False) -> list[Deliver]:
        """Read the messages announced by +CMTI since the last call, at most
        MAX_READ_PER_CALL of them (every stored one with ``scan``, as after a start, or
        after more than MAX_ANNOUNCED notices), delete
        them from the modem, and return the complete ones, concatenated parts joined.
        ``now``: a monotonic time, for dropping parts whose siblings never come.

        A message is deleted once read: one whose handling is cut short by a crash is lost
        (an SMS command is simply sent again). If the modem fails half-way, the messages
        completed so far are returned and the failure surfaces at the next call.
        """
        complete: list[Deliver] = []
        part: Deliver | None
        try:
            if scan or self._announced_lost:
                self._announced_lost = False
                self._announced.clear()
                for index, part in self.list_messages():
                    self.delete_message(index)
                    self._collect(part, now, complete)
            for _ in range(min(len(self._announced), MAX_READ_PER_CALL)):
                index = self._announced[0]
                try:
                    part = self.read_message(index)
                    if part is not None:
                        self.delete_message(index)
                except (AtTimeout, PortLost):
                    raise  # the modem, not this message: read it again once it is back
                except ModemError as exc:
                    # This slot cannot be read (a refused CMGR): skip it rather than retry
                    # it forever; the periodic inbox listing finds it if it was real.
                    log.warning("modem: new message at index %d unreadable: %s", index, exc)
                    part = None
                self._announced.popleft()
                if part is not None:
                    self._collect(part, now, complete)
        except ModemError:
            if not complete:
                raise
            log.warning("modem failed while reading new SMS", exc_info=True)
        return complete

    @property
    def unread_announced(self) -> bool:
        """Whether +CMTI announced messages that receive() has not read yet."""
        return bool(self._announced)

    def _collect(self, part: Deliver, now: float, complete: list[Deliver]) -> None:
        whole = self._reassembler.add(part, now)
        if whole is not None:
            complete.append(whole)

    def _received(self, index: int, stat: str, pdu_hex: str) -> Deliver | None:
        if stat not in _RECEIVED:
            return None  # a stored outgoing message: not ours to touch
        try:
            return decode_deliver(pdu_hex)
        except PduError as exc:
            log.warning("deleting malformed SMS at index %d: %s (%r)", index, exc,
                        pdu_hex[:80])
            self.delete_message(index)
            return None

    def _handle_urc(self, urc: Urc) -> None:
        """On the reader thread: note new messages and a call's end, pass everything on."""
        if urc.line in CALL_ENDS:
            self._call_end = urc.line
        if urc.line.startswith("+CMTI:"):
            fields = _fields(urc.line)
            if len(fields) >= 2 and fields[1].isdecimal():  # int() takes no "²"
                if len(self._announced) == MAX_ANNOUNCED:
                    self._announced_lost = True
                self._announced.append(int(fields[1]))
        if self._on_urc is not None:
            self._on_urc(urc)

    # --- commands -----------------------------------------------------------------------

    def _require_channel(self) -> AtChannel:
        if self._channel is None:
            raise PortLost(f"modem port {self.url} is not open")
        return self._channel

    def _at(self, command: str, *, timeout: float | None = None,
            prompt_data: str | None = None) -> list[str]:
        """One command; counts consecutive timeouts towards a re-initialisation."""
        channel = self._require_channel()
        try:
            lines = channel.command(command, timeout=timeout or self.timings.command_s,
                                    prompt_data=prompt_data,
                                    prompt_timeout=self.timings.prompt_s)
        except AtTimeout:
            self._timeouts += 1
            if self._timeouts >= MAX_TIMEOUTS and not self._needs_init:
                log.warning("modem on %s missed %d deadlines in a row; it will be "
                            "re-initialised", self.url, self._timeouts)
                self._needs_init = True
            raise
        except PortLost:
            self._needs_init = True
            raise
        except ModemError:  # the modem answered, with an error: it is alive
            self._timeouts = 0
            raise
        self._timeouts = 0
        return lines
