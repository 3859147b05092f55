"""The modem's byte stream cut into lines, with a bound on a line's length."""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"[\r\n]")

# The longest PDU line is under 400 characters (SCA, 164 octets of TPDU, in hex): a line
# longer than this is noise, whatever it holds.
MAX_LINE_BYTES = 4096


class LineSplitter:
    """Cuts the modem's byte stream into lines at CR or LF in time linear in the bytes fed:
    each chunk is searched once, never the line it continues. A line longer than
    ``max_bytes`` is dropped whole, up to its line end, and counted in ``dropped``."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES):
        self.max_bytes = max_bytes
        self.unfinished = bytearray()  # the line begun and not yet ended
        self.dropped = 0
        self._dropping = False  # within an overlong line: its bytes go until its end

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that ``chunk`` ends (without their line ends), in order."""
        *ended, rest = _LINE_END.split(chunk)
        lines = []
        for piece in ended:
            if self._extend(piece):
                lines.append(bytes(self.unfinished))
            self.unfinished.clear()
            self._dropping = False
        self._extend(rest)
        return lines

    def _extend(self, piece: bytes) -> bool:
        """Add ``piece`` to the unfinished line; False when that line is too long."""
        if self._dropping:
            return False
        if len(self.unfinished) + len(piece) > self.max_bytes:
            self._dropping = True
            self.dropped += 1
            self.unfinished.clear()
            return False
        self.unfinished += piece
        return True
