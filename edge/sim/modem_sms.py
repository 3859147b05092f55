"""The modem emulator's SMS: the network delivering into storage (+CMTI), AT+CMGF, +CNMI,
+CPMS, reading, listing and deleting stored messages, AT+CMGS with its prompt and PDU."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone

from edge.modem.pdu import PduError, decode_submit, encode_deliver
from edge.sim.modem_base import ESC, EmulatorBase, Reply, SentSms, Stored, tpdu_length

_CHINA_TIME = timezone(timedelta(hours=8))


class SmsAnswers(EmulatorBase):
    """Stored and sent SMS; the knobs ``prompt_delay`` and ``send_time``."""

    prompt_delay: float
    send_time: float
    _sent: list[SentSms]
    _commands: list[tuple[float, str]]
    _send_failures: list[int | None]
    _send_answer_delay: float
    _answers_to_lose: int
    _next_mr: int
    _next_concat: int
    _stop: threading.Event

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
            self._storage[free[0]] = Stored(0, pdu_hex)
            if self._cnmi_mt == 1:
                self._write(f'\r\n+CMTI: "SM",{free[0]}\r\n'.encode())
            return free[0]

    def _at_cmgf(self, operation, args, stop):
        if operation == "set":
            mode = self._integers(args)
            if mode not in ([0], [1]):
                raise Reply("ERROR")
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
            raise Reply("ERROR")
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
        if delay and terminator != ESC:
            self._stop.wait(delay)
        if terminator == ESC:
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
        except Reply as reply:
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
        if not self._registered():
            raise self._cms(331)  # no network service: no signal, or not registered
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
