"""SIM PINs that a card refused, remembered across processes and restarts.

A SIM locks itself (PUK) after three wrong PINs. Not sending a refused PIN again within one
process is not enough: the daemon restarting, `check` and `test-sms` each open the modem
anew. So each refusal is kept on disk, next to the event store, as a salted hash of the
card's ICCID and the PIN (the PIN itself is in the config already; it need not be in a
second file): a PIN another card refused, or one not yet tried on this card, is tried.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "sim-pin-refused"


class RefusedPinRecord:
    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def _digest(card: str, pin: str) -> str:
        return hashlib.sha256(f"edge-alarm sim pin:{card}:{pin}".encode()).hexdigest()

    def _digests(self) -> set[str]:
        try:
            return set(self.path.read_text(encoding="ascii").split())
        except (OSError, UnicodeDecodeError):
            return set()

    def refused(self, card: str, pin: str) -> bool:
        """Whether this card (its ICCID, "" when unknown) refused this very PIN before."""
        return self._digest(card, pin) in self._digests()

    def record(self, card: str, pin: str) -> None:
        digests = sorted(self._digests() | {self._digest(card, pin)})
        try:
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text("".join(d + "\n" for d in digests), encoding="ascii")
            os.replace(temporary, self.path)
        except OSError as e:
            log.warning("could not note the refused SIM PIN in %s (%s): another start may "
                        "try it again", self.path, e)

    def clear(self) -> None:
        """A card took its PIN: the refusals noted before no longer matter."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove %s: %s", self.path, e)
