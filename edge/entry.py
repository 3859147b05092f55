"""The `edge-alarm` program (console script and `python -m edge`). For `run`, the
daemon's signals are caught before anything else is imported: a SIGHUP in the first
instant of a start must not kill the alarm daemon (its default action), and reading the
package's modules takes a noticeable time on a Pi Zero."""

from __future__ import annotations

import sys

from edge.start_signals import StartSignals

_CONFIG_OPTIONS = ("-c", "--config")


def command_of(argv: list[str]) -> str | None:
    """The command word of an `edge-alarm` command line (options before it skipped)."""
    words = iter(argv)
    for word in words:
        if word in _CONFIG_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> int:
    start_signals = StartSignals().install() if command_of(sys.argv[1:]) == "run" else None
    from edge import cli
    return cli.main(start_signals=start_signals)
