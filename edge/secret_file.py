"""A file that holds a secret (the platform's token, the SIA key): its first line, read
without ever showing it. Group read is normal (root:edge-alarm 0640); a warning when
every user may read it."""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger(__name__)

# Far more than any token or key: a wrong path pointing at a big file is not read whole.
MAX_BYTES = 64 * 1024


def first_line(path: str, what: str, error: type[Exception]) -> str:
    """The first line of ``path``, stripped; ``error`` (``what`` and the path: "token file
    /etc/edge-alarm/token does not exist") when it cannot be read as UTF-8 text."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            head = file.read(MAX_BYTES)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s %s is open to every user (mode %04o); chmod 600 or 640 it",
                    what, path, stat.S_IMODE(mode))
    try:
        lines = head.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    return lines[0].strip() if lines else ""
