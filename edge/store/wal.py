"""Whether a store's write-ahead log lost committed transactions to damage. SQLite reads a
WAL up to its first frame that fails its checksum and silently ignores the rest (and all of
it when its header is damaged, or when the database file beside it is empty), so a flipped
bit in the log loses every commit after it, and the store would then give new events the
numbers the platform already has for others.

The format (sqlite.org/fileformat2.html#walformat): a 32-byte header (magic, version,
page size, checkpoint sequence, two salts, a checksum of the first 24 bytes), then frames:
a 24-byte header (page number, the database size after a commit or 0, the two salts, a
running checksum over every frame so far) and one page. A torn write at a power cut can
only hurt the last transaction, which was never acknowledged: the log is damaged only when
a frame fails its checksum and at least two commits of the same log follow it, since a
transaction starts only after the one before it was synced."""

from __future__ import annotations

import struct
from pathlib import Path

_WORD_ORDER = {0x377F0682: "<", 0x377F0683: ">"}  # by magic: the checksum's word order
_VERSION = 3007000
_HEADER = 32
_FRAME_HEADER = 24
_SMALLEST_FRAME = _FRAME_HEADER + 512


def _checksum(data: bytes, order: str, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _word(log: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", log, offset)[0])


def _pair(log: bytes, offset: int) -> tuple[int, int]:
    return _word(log, offset), _word(log, offset + 4)


def wal_damage(db: Path) -> str | None:
    """What damage the WAL beside ``db`` shows (None: none, or no WAL). To be called
    before the database is opened, since opening it settles the log."""
    try:
        log = Path(f"{db}-wal").read_bytes()
    except FileNotFoundError:
        return None
    if len(log) < _HEADER + _SMALLEST_FRAME:
        return None  # not one frame: nothing was committed to it
    order = _WORD_ORDER.get(_word(log, 0))
    page_size = 65536 if _word(log, 8) == 1 else _word(log, 8)
    if (order is None or _word(log, 4) != _VERSION or page_size & (page_size - 1)
            or not 512 <= page_size <= 65536
            or _checksum(log[:24], order) != _pair(log, 24)):
        return "its header is damaged: no commit in it can be read"
    salts, frame_size, sums = log[16:24], _FRAME_HEADER + page_size, _pair(log, 24)
    frames = range(_HEADER, len(log) - frame_size + 1, frame_size)
    commits = 0
    for n, offset in enumerate(frames):
        if log[offset + 8:offset + 16] != salts:
            break  # the end of this log: what follows is an older one's
        sums = _checksum(log[offset + _FRAME_HEADER:offset + frame_size], order,
                         *_checksum(log[offset:offset + 8], order, *sums))
        if sums != _pair(log, offset + 16):
            lost = sum(1 for later in frames[n:] if log[later + 8:later + 16] == salts
                       and _word(log, later + 4) != 0)
            if lost >= 2:
                return f"frame {n + 1} fails its checksum: {lost} commits after it are lost"
            break  # the last transaction, torn at a power cut: never acknowledged
        commits += _word(log, offset + 4) != 0
    if commits and db.exists() and db.stat().st_size == 0:
        return f"the database file is empty: the {commits} commits in its log are lost"
    return None
