"""Text that strangers control (an SMS's words, a sender's name, a modem's or network's
strings) made safe to show: on a log line, on the terminal, in an SMS signed by the school.

Control characters (ESC, so no ANSI sequence either), line breaks, the Unicode line and
paragraph separators and the invisible format characters (bidi overrides among them) are
written as Python escapes (\\x1b, \\n, \\u2028, \\u202e): one line stays one line, and
what is shown is what was sent. Everything else, Chinese included, is shown as it is.
"""

from __future__ import annotations

import json
import logging
import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Format characters that join letters (Indic scripts) and emoji sequences: invisible but
# harmless, and escaping them would break the text.
_JOINERS = frozenset({"\u200c", "\u200d"})


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _JOINERS


def safe_text(text: object, limit: int | None = None) -> str:
    """``text`` (anything; str() of it) with every unsafe character escaped; with
    ``limit``, at most that many characters, ending in "…" when cut (an escape is never
    cut in half)."""
    pieces = [repr(char)[1:-1] if is_unsafe(char) else char for char in str(text)]
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept, used = [], 1  # room for the "…"
    for piece in pieces:
        if used + len(piece) > limit:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + "…"


def safe_json(value, **options) -> str:
    """json.dumps(value, **options), Chinese as it is, with every unsafe character as a
    \\uXXXX escape: the same JSON value, which no terminal can take for a command or a
    line break."""
    text = json.dumps(value, ensure_ascii=False, **options)
    # JSON escapes C0 controls itself (a raw line break is the indentation's); the rest
    # can only be inside strings, where \uXXXX means the same.
    return "".join(json.dumps(char)[1:-1] if char >= "\x7f" and is_unsafe(char) else char
                   for char in text)


class SafeFormatter(logging.Formatter):
    """Log lines whose message (with the stranger's text in it) stays on one line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_text(record.message)
        return super().formatMessage(record)
