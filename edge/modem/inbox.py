"""The modem's inbox: new messages announced by +CMTI, listing, reading and deleting
stored ones, joining concatenated parts (a part of edge.modem.modem.Modem)."""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Callable

from edge.errors import ModemError
from edge.modem.at import AtTimeout, CmsError, PortLost
from edge.modem.pdu import Deliver, PduError, Reassembler, decode_deliver
from edge.modem.replies import fields as _fields

if TYPE_CHECKING:
    from edge.modem.modem import ModemTimings

log = logging.getLogger(__name__)

_CMS_INVALID_INDEX = 321
_RECEIVED = {"0", "1"}  # <stat> in PDU mode: received unread, received read
# New-message indexes (+CMTI) kept until read: more than any SMS storage holds. Beyond it
# the oldest go, and the next receive() lists the whole inbox instead.
MAX_ANNOUNCED = 256
# New messages read per receive(): an SMS flood is read between sends, never ahead of the
# alarm SMS waiting behind it.
MAX_READ_PER_CALL = 8


class Inbox:
    """The Modem's received messages; the Modem's reader thread calls ``_note_urc``."""

    timings: ModemTimings
    _at: Callable[..., list[str]]

    def _init_inbox(self) -> None:
        # Appended by the reader thread; _announced_lost set when the oldest had to go.
        self._announced: collections.deque[int] = collections.deque(maxlen=MAX_ANNOUNCED)
        self._announced_lost = False
        self._reassembler = Reassembler()

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

    def _note_urc(self, line: str) -> None:
        """On the reader thread: note a new message's index (+CMTI)."""
        if line.startswith("+CMTI:"):
            fields = _fields(line)
            if len(fields) >= 2 and fields[1].isdecimal():  # int() takes no "²"
                if len(self._announced) == MAX_ANNOUNCED:
                    self._announced_lost = True
                self._announced.append(int(fields[1]))
