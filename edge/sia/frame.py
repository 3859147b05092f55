"""SIA DC-09 framing (ANSI/SIA DC-09-2013): the messages we send and the answers we take.

A message is ``<LF><crc><0LLL>"<id>"<seq>R<rcvr>L<line>#<acct>[<data>]_<timestamp><CR>``:
crc the CRC-16 (ARC: reflected polynomial 0xA001, initial 0) and 0LLL the length, both
four upper-case hex digits over everything from the opening quote to before the CR; seq
0001-9999; the timestamp UTC, ``_HH:MM:SS,MM-DD-YYYY``. Encrypted, the id gets a ``*``
and everything after ``[`` is hex of AES-CBC over ``<pad>|<data>]_<timestamp>``, the pad
being 1-16 random characters (never ``|``, ``[`` or ``]``) that make whole blocks.

An answer (ACK, NAK, DUH, RSP) comes framed the same way and counts only when its CRC and
length hold, its sequence is ours (a NAK's is 0000) and, to an encrypted message, its ACK
decrypts under our key: a stranger on the path cannot acknowledge an alarm away.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from edge.sia.crypto import BLOCK, AesCbc

ADM_CID, NULL = "ADM-CID", "NULL"
ACK, NAK, DUH, RSP = "ACK", "NAK", "DUH", "RSP"
TIMESTAMP_FORMAT = "_%H:%M:%S,%m-%d-%Y"
SEQUENCE_MAX = 9999
# An encrypted ACK's time against our message's: the receiver took our time within its
# window (DC-09: -20 s/+40 s), so a real ACK is far closer; an older one is a replay.
ACK_WINDOW = dt.timedelta(minutes=5)
# The longest answer frame taken (between LF and CR); a real one is under 200 bytes.
MAX_FRAME = 1024

_PAD_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "|[]")
_ANSWER_RE = re.compile(rb'"(\*?)(ACK|NAK|DUH|RSP)"([0-9]{4})([^\[]{0,64})\[(.*)', re.S)
_ACCOUNT_RE = re.compile(rb"#([0-9A-Fa-f]{3,16})")
_STAMP_RE = re.compile(rb"_([0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{2}-[0-9]{2}-[0-9]{4})$")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]+")


def crc16(data: bytes) -> int:
    """CRC-16/ARC, as DC-09 (and DC-07) use it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@dataclass(frozen=True)
class Header:
    """Who we are to the receiver: the account and the receiver and line numbers (hex
    digits, as the alarm centre gives them)."""

    account: str
    receiver: str
    line: str

    def fields(self) -> str:
        return f"R{self.receiver.upper()}L{self.line.upper()}#{self.account.upper()}"


def frame(body: str) -> bytes:
    """``body`` (from the opening quote) with its CRC and length, between LF and CR."""
    raw = body.encode("ascii")
    return b"\n%04X%04X%s\r" % (crc16(raw), len(raw), raw)


def timestamp(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime(TIMESTAMP_FORMAT)


def message(kind: str, sequence: int, header: Header, data: str, when: dt.datetime,
            cipher: AesCbc | None) -> bytes:
    """One message of ``kind`` (ADM_CID or NULL) whose data, up to and with its closing
    ``]``, is ``data``; stamped ``when``; encrypted when there is a ``cipher``."""
    if not 1 <= sequence <= SEQUENCE_MAX:
        raise ValueError(f"sequence {sequence} is outside 1-{SEQUENCE_MAX}")
    rest = data + timestamp(when)
    token = f'"{kind}"'
    if cipher is not None:
        token = f'"*{kind}"'
        plain = "|" + rest
        pad = "".join(secrets.choice(_PAD_ALPHABET)
                      for _ in range(BLOCK - len(plain) % BLOCK))
        rest = cipher.encrypt((pad + plain).encode("ascii")).hex().upper()
    return frame(f"{token}{sequence:04d}{header.fields()}[{rest}")


@dataclass(frozen=True)
class Answer:
    token: str  # ACK, NAK, DUH or RSP
    sequence: int
    receiver_time: dt.datetime | None  # a NAK's (UTC): what the receiver takes as now


def frames(buffer: bytearray) -> list[bytes]:
    """Take the complete frames out of ``buffer``: the bytes between a CR and the last LF
    before it (so garbage with stray LFs before an answer does not swallow it). What
    cannot begin a frame is dropped, and an unfinished one longer than MAX_FRAME too: the
    buffer never holds more than MAX_FRAME + 1 bytes after this."""
    out: list[bytes] = []
    while (end := buffer.find(b"\r")) >= 0:
        start = buffer.rfind(b"\n", 0, end)
        if start >= 0 and end - start - 1 <= MAX_FRAME:
            out.append(bytes(buffer[start + 1:end]))
        del buffer[:end + 1]
    start = buffer.rfind(b"\n")
    if start < 0 or len(buffer) - start > MAX_FRAME + 1:
        buffer.clear()
    else:
        del buffer[:start]
    return out


def parse_answer(raw: bytes, sequence: int, account: str, cipher: AesCbc | None,
                 sent_at: dt.datetime) -> Answer | None:
    """The answer to message ``sequence``, stamped ``sent_at``, that frame ``raw``
    (between LF and CR) holds, or None when it is none: a bad CRC or length, another
    sequence or account, an encrypted ACK that does not decrypt under our key or is not
    stamped within ACK_WINDOW of our message (an old ACK replayed), garbage."""
    if len(raw) < 8 or not _HEX_RE.fullmatch(raw[:8]):
        return None
    body = raw[8:]
    if int(raw[:4], 16) != crc16(body) or int(raw[4:8], 16) != len(body):
        return None
    match = _ANSWER_RE.fullmatch(body)
    if match is None:
        return None
    star, token, seq_text, head, rest = match.groups()
    got_sequence = int(seq_text)
    if token != b"NAK" and got_sequence != sequence:
        return None
    named = _ACCOUNT_RE.search(head)
    if named is not None and named.group(1).upper() != account.upper().encode():
        return None
    if token == b"ACK" and cipher is not None:
        # Our message was encrypted: its ACK must be too, under the same key.
        acked_at = _decrypted_stamp(rest, cipher) if star else None
        if acked_at is None or abs(acked_at - sent_at) > ACK_WINDOW:
            return None
    receiver_time = None
    if token == b"NAK":
        stamp = _STAMP_RE.search(rest)
        receiver_time = _read_stamp(stamp.group(1)) if stamp else None
    return Answer(token.decode(), got_sequence, receiver_time)


def _decrypted_stamp(rest: bytes, cipher: AesCbc) -> dt.datetime | None:
    if not _HEX_RE.fullmatch(rest) or len(rest) % 2:
        return None
    try:
        plain = cipher.decrypt(bytes.fromhex(rest.decode("ascii")))
    except ValueError:
        return None
    stamp = _STAMP_RE.search(plain)
    if stamp is None or plain[stamp.start() - 1:stamp.start()] != b"]":
        return None
    return _read_stamp(stamp.group(1))


def _read_stamp(text: bytes) -> dt.datetime | None:
    try:
        when = dt.datetime.strptime(text.decode("ascii"), TIMESTAMP_FORMAT[1:])
    except ValueError:
        return None
    return when.replace(tzinfo=dt.timezone.utc)
