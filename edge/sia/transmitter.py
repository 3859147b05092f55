"""One DC-09 message's exchange with the receiver: framed, stamped, sent, answered.

A NAK is the receiver saying our timestamp is outside its window (DC-09 5.5.1.8): its
own time comes with it, so the message goes once more at once, stamped with the
receiver's time, and later messages keep that offset from our clock until another NAK
moves it. The sequence number is the caller's (sequence.py): a message sent again (after a
NAK, or a retry after backoff) keeps its number, so the receiver can pair our answers."""

from __future__ import annotations

import datetime as dt
from typing import Callable

from edge.errors import SiaError
from edge.config import Sia
from edge.sia.crypto import AesCbc, read_key_file
from edge.sia.frame import ACK, NAK, NULL, RSP, Answer, Header, message, parse_answer
from edge.sia.link import Link, open_link


class Transmitter:
    def __init__(self, link: Link, header: Header, cipher: AesCbc | None,
                 now: Callable[[], dt.datetime], timeout_s: float):
        self._link = link
        self._header = header
        self._cipher = cipher
        self._now = now
        self._timeout_s = timeout_s
        self._offset = dt.timedelta(0)  # the receiver's clock minus ours, from a NAK

    @property
    def offset(self) -> dt.timedelta:
        return self._offset

    def send(self, kind: str, sequence: int, data: str) -> Answer:
        """The receiver's answer to message ``sequence`` (after at most one resend on a
        NAK's time); SiaError when none came."""
        answer = self._exchange(kind, sequence, data)
        if answer.token == NAK and answer.receiver_time is not None:
            self._offset = answer.receiver_time - self._now()
            answer = self._exchange(kind, sequence, data)
        return answer

    def _exchange(self, kind: str, sequence: int, data: str) -> Answer:
        when = self._now() + self._offset
        sent = message(kind, sequence, self._header, data, when, self._cipher)
        return self._link.exchange(sent, self._timeout_s, self._answer_to(sequence, when))

    def _answer_to(self, sequence: int, when: dt.datetime
                   ) -> Callable[[bytes], Answer | None]:
        def accept(raw: bytes) -> Answer | None:
            return parse_answer(raw, sequence, self._header.account, self._cipher, when)
        return accept

    def close(self) -> None:
        self._link.close()


def open_transmitter(sia: Sia, now: Callable[[], dt.datetime], timeout_s: float
                     ) -> Transmitter:
    """The transmitter [sia] describes. SiaError when its key file is unusable,
    ImportError when a key is set and the cryptography library is missing."""
    cipher = AesCbc(read_key_file(str(sia.key_file))) if sia.key_file is not None else None
    return Transmitter(open_link(sia.protocol, sia.host, sia.port),
                       Header(sia.account, sia.receiver, sia.line), cipher, now, timeout_s)


def probe(sia: Sia, timeout_s: float) -> str | None:
    """Whether the receiver acknowledges a NULL message (`edge-alarm check`): None when it
    does, else why not."""
    try:
        transmitter = open_transmitter(sia, lambda: dt.datetime.now(dt.timezone.utc),
                                       timeout_s)
    except (SiaError, ImportError) as e:
        return str(e)
    try:
        answer = transmitter.send(NULL, 1, "]")
    except SiaError as e:
        return str(e)
    finally:
        transmitter.close()
    return None if answer.token in (ACK, RSP) else f"the receiver answered {answer.token}"
