"""The DC-09 AES key and cipher.

The key file holds 16, 24 or 32 hexadecimal characters whose ASCII bytes are the
AES-128/192/256 key, as pysiaalarm and Home Assistant's `sia` integration take it (not the
bytes the hex digits spell). DC-09 encrypts with AES in CBC mode under an all-zero IV; the
random pad at the start of every message is what makes two equal messages differ.

The cipher comes from `cryptography` (pyca), imported only when a key is configured: a
gate that sends in clear, or sends nothing to an alarm centre, never loads it.
"""

from __future__ import annotations

import re

from edge.errors import SecretFileError, SiaError
from edge.secret_file import read_secret

KEY_RE = re.compile(r"[0-9A-Fa-f]{16}|[0-9A-Fa-f]{24}|[0-9A-Fa-f]{32}")
BLOCK = 16


def read_key_file(path: str) -> bytes:
    """The key held by ``path`` (its first line, stripped). SiaError says what is wrong
    without ever showing the file's content."""
    try:
        key = read_secret(path, "key")
    except SecretFileError as exc:
        raise SiaError(str(exc)) from None
    if not KEY_RE.fullmatch(key):
        raise SiaError(f"key file {path} must hold 16, 24 or 32 hexadecimal characters "
                       f"(the AES-128/192/256 key) on its first line")
    return key.encode("ascii")


class AesCbc:
    """AES-CBC with DC-09's zero IV, on whole blocks (the caller pads)."""

    def __init__(self, key: bytes):
        # Imported here: only a configured key needs the library (see the module's doc).
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(BLOCK)))

    def __repr__(self) -> str:  # the key stays out of every log line and traceback
        return "AesCbc(<key>)"

    def encrypt(self, plain: bytes) -> bytes:
        encryptor = self._cipher.encryptor()
        return encryptor.update(plain) + encryptor.finalize()

    def decrypt(self, data: bytes) -> bytes:
        """ValueError when ``data`` is no whole number of blocks."""
        if not data or len(data) % BLOCK:
            raise ValueError("not a whole number of AES blocks")
        decryptor = self._cipher.decryptor()
        return decryptor.update(data) + decryptor.finalize()
