"""The alphabets of an SMS text (TS 23.038): GSM 7-bit default alphabet with its extension
table, packed septets, UCS-2; and cutting a text into the parts that carry it."""

from __future__ import annotations

from edge.modem.pdu.message import PduError

# --- GSM 7-bit default alphabet (TS 23.038 §6.2.1) -------------------------------------------

_ESC = 0x1B
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}
# Character -> its septets: one from the basic table, or ESC + one from the extension table.
_GSM7_SEPTETS: dict[str, tuple[int, ...]] = {
    char: (code,) for code, char in enumerate(_GSM7_BASIC) if code != _ESC
}
_GSM7_SEPTETS.update({char: (_ESC, code) for code, char in _GSM7_EXTENSION.items()})

# Room for the text of one SMS, in septets (GSM 7-bit) or UTF-16 code units (UCS-2).
_SINGLE = {"gsm7": 160, "ucs2": 70}
# A concatenated part loses 6 octets to its header: 7 septets (with a fill bit), or 3 units.
_PART = {"gsm7": 153, "ucs2": 67}
# "…" is not in the GSM alphabet; "..." keeps a GSM text in GSM, which holds 2.3 times
# more text per part than switching the whole text to UCS-2 for one character would.
_ELLIPSIS = {"gsm7": "...", "ucs2": "…"}


def is_gsm7(text: str) -> bool:
    return all(char in _GSM7_SEPTETS for char in text)


def _char_cost(char: str, encoding: str) -> int:
    if encoding == "gsm7":
        return len(_GSM7_SEPTETS[char])
    return 2 if ord(char) > 0xFFFF else 1  # a surrogate pair in UTF-16


def gsm7_encode(text: str) -> list[int]:
    return [septet for char in text for septet in _GSM7_SEPTETS[char]]


def gsm7_decode(septets: list[int]) -> str:
    chars = []
    escaped = False
    for septet in septets:
        if escaped:
            escaped = False
            if septet == _ESC:  # reserved for a further table: shown as a space (TS 23.038)
                chars.append(" ")
            else:  # an unknown extension shows the basic table's character (TS 23.038)
                chars.append(_GSM7_EXTENSION.get(septet, _GSM7_BASIC[septet]))
        elif septet == _ESC:
            escaped = True
        else:
            chars.append(_GSM7_BASIC[septet])
    return "".join(chars)


def pack_septets(septets: list[int]) -> bytes:
    bits = 0
    for position, septet in enumerate(septets):
        bits |= septet << (7 * position)
    return bits.to_bytes((7 * len(septets) + 7) // 8, "little")


def unpack_septets(data: bytes, count: int) -> list[int]:
    bits = int.from_bytes(data, "little")
    return [(bits >> (7 * position)) & 0x7F for position in range(count)]


def septets_for_octets(octets: int) -> int:
    return (8 * octets + 6) // 7


# --- splitting --------------------------------------------------------------------------------


def split_text(text: str, max_parts: int = 4) -> tuple[str, list[str]]:
    """Choose the alphabet and cut ``text`` into the texts of the SMS that carry it.

    Returns ("gsm7" | "ucs2", parts). A character (an extension character's two septets,
    an emoji's surrogate pair) is never cut across parts. A text that needs more than
    ``max_parts`` parts is shortened at a character and ends in "…" (UCS-2) or "..." (GSM).
    """
    if max_parts < 1:
        raise PduError(f"max_parts must be at least 1, not {max_parts}")
    encoding = "gsm7" if is_gsm7(text) else "ucs2"
    if encoding == "ucs2" and any("\ud800" <= char <= "\udfff" for char in text):
        raise PduError(f"text holds a lone UTF-16 surrogate: {text[:40]!r}")
    costs = [_char_cost(char, encoding) for char in text]
    if sum(costs) <= _SINGLE[encoding]:
        return encoding, [text]
    room = _SINGLE[encoding] if max_parts == 1 else _PART[encoding]
    parts = _pack(text, costs, room)
    if len(parts) > max_parts:
        parts = parts[:max_parts]
        parts[-1] = _shorten(parts[-1], room, encoding)
    return encoding, parts


def _pack(text: str, costs: list[int], room: int) -> list[str]:
    parts: list[str] = []
    start = used = 0
    for index, cost in enumerate(costs):
        if used + cost > room:
            parts.append(text[start:index])
            start, used = index, 0
        used += cost
    parts.append(text[start:])
    return parts


def _shorten(part: str, room: int, encoding: str) -> str:
    ellipsis = _ELLIPSIS[encoding]
    free = room - sum(_char_cost(char, encoding) for char in ellipsis)
    kept = []
    for char in part:
        free -= _char_cost(char, encoding)
        if free < 0:
            break
        kept.append(char)
    return "".join(kept) + ellipsis

