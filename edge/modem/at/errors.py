"""What a command on the AT channel can fail with."""

from __future__ import annotations

from edge.errors import ModemError


class AtTimeout(ModemError):
    """No final result code (or no ``>`` prompt) came before the deadline. ``data_sent``:
    the data after the prompt (an SMS PDU) had gone to the modem, which may have sent it."""

    data_sent = False


class AtError(ModemError):
    """The modem answered ERROR (or another failing final result such as NO CARRIER)."""


class CmeError(ModemError):
    """``+CME ERROR: <code>``: a mobile equipment error (27.007 §9.2); ``code`` is an int
    in numeric mode (AT+CMEE=1), the text in verbose mode."""

    def __init__(self, code: int | str, command: str):
        self.code = code
        super().__init__(f"{command}: +CME ERROR: {code}")


class CmsError(ModemError):
    """``+CMS ERROR: <code>``: a message service error (27.005 §3.2.5)."""

    def __init__(self, code: int | str, command: str):
        self.code = code
        super().__init__(f"{command}: +CMS ERROR: {code}")


class PortLost(ModemError):
    """The serial port failed or vanished (a USB modem re-enumerating, a cable pulled).
    ``data_sent`` as for AtTimeout."""

    data_sent = False


class PortBusy(ModemError):
    """Another program holds the modem port (our lock on it was refused)."""
