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

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

from edge.errors import ModemError
from edge.modem.at import AtChannel, AtError, AtTimeout, CmeError, CmsError, PortLost, Urc
from edge.modem.health import HealthChecks, ModemHealth
from edge.modem.inbox import MAX_ANNOUNCED, MAX_READ_PER_CALL, Inbox
from edge.modem.pin_record import FILE_NAME as PIN_RECORD_FILE
from edge.modem.pin_record import RefusedPinRecord
from edge.modem.pdu import SubmitPdu, encode_submit
from edge.modem.replies import fields as _fields
from edge.modem.replies import first as _first
from edge.modem.replies import is_busy as _is_busy
from edge.modem.voice import CALL_ENDS, CALL_POLL_S, VoiceCalls

# Names the modem's parts define, importable from here as before.
__all__ = ["CALL_ENDS", "CALL_POLL_S", "MAX_ANNOUNCED", "MAX_READ_PER_CALL", "MAX_TIMEOUTS",
           "Modem", "ModemHealth", "ModemTimings", "UNKNOWN_REFERENCE"]

log = logging.getLogger(__name__)

# Consecutive timeouts after which the modem is re-initialised.
MAX_TIMEOUTS = 3
UNKNOWN_REFERENCE = -1  # a part the network took whose +CMGS reference we never read
_SIM_MISSING_CME = {10, 13, 15}  # not inserted, failure, wrong
_SIM_LOCKED_CME = {11: "SIM PIN", 12: "SIM PUK"}
_CME_INCORRECT_PASSWORD = 16
_CMS_SMSC_UNKNOWN = 330
_CNMI_SETTINGS = ("2,1,0,0,0", "2,1", "1,1,0,0,0", "1,1")  # +CMTI for each new SMS
_STORAGES = ("SM", "ME", "MT")  # SIM first: every modem has it


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



class Modem(HealthChecks, VoiceCalls, Inbox):
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
        self._init_inbox()
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

    def _handle_urc(self, urc: Urc) -> None:
        """On the reader thread: note new messages and a call's end, pass everything on."""
        if urc.line in CALL_ENDS:
            self._call_end = urc.line
        self._note_urc(urc.line)
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
