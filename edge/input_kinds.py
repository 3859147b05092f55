"""The handler class of each kind of input, as its entry in the config's table of input
kinds names it (edge.config.inputs.INPUT_KINDS): a new kind is its handler's module and
that one entry. Imported here, not by the config, which must load without the daemon."""

from __future__ import annotations

import importlib

from edge.config import INPUT_KINDS
from edge.input_handler import InputHandler


def _load(path: str) -> type[InputHandler]:
    module, _, name = path.partition(":")
    handler = getattr(importlib.import_module(module), name)
    if not (isinstance(handler, type) and issubclass(handler, InputHandler)):
        raise TypeError(f"{path} is no InputHandler")
    return handler


HANDLERS: dict[str, type[InputHandler]] = {k.kind: _load(k.handler) for k in INPUT_KINDS}
