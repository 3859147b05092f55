"""A SIM PIN that the card refused, remembered across processes and restarts.

A SIM locks itself (PUK) after three wrong PINs. Not sending a refused PIN again within one
process is not enough: the daemon restarting, `check` and `test-sms` each open the modem
anew. So the refusal is kept on disk, next to the event store, as a salted hash (the PIN
itself is in the config already, but it need not be in a second file). A different PIN in
the config is tried, once.
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
    def _digest(pin: str) -> str:
        return hashlib.sha256(f"edge-alarm sim pin:{pin}".encode()).hexdigest()

    def refused(self, pin: str) -> bool:
        """Whether the card refused this very PIN before."""
        try:
            return self.path.read_text(encoding="ascii").strip() == self._digest(pin)
        except (OSError, UnicodeDecodeError):
            return False

    def record(self, pin: str) -> None:
        try:
            temporary = self.path.with_name(self.path.name + ".tmp")
            temporary.write_text(self._digest(pin) + "\n", encoding="ascii")
            os.replace(temporary, self.path)
        except OSError as e:
            log.warning("could not note the refused SIM PIN in %s (%s): another start may "
                        "try it again", self.path, e)

    def clear(self) -> None:
        """The card took a PIN: whatever was refused before no longer matters."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove %s: %s", self.path, e)
