"""The table of input kinds: the handler class for each `kind` of [[input]] (what a kind
means lives in the handler's own module)."""

from __future__ import annotations

from edge.ack_input import AckSwitch
from edge.alarm_input import PanicButton, TamperSwitch
from edge.input_handler import InputHandler
from edge.watches import GateWatch, PowerWatch

INPUT_KINDS: dict[str, type[InputHandler]] = {
    "panic": PanicButton,
    "tamper": TamperSwitch,
    "gate": GateWatch,
    "power": PowerWatch,
    "ack": AckSwitch,
}
