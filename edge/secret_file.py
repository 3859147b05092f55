"""A secret kept in a file of its own (the platform token, the broker password): its
first line, read so that nothing here ever shows it."""

from __future__ import annotations

import logging
import os
import stat

from edge.errors import SecretFileError

log = logging.getLogger(__name__)


def read_secret(path: str, what: str) -> str:
    """The first line of ``path``, stripped; ``what`` names the file and the secret in
    the messages ("token"). Warns when other users may read the file; group read is normal
    (root:edge-alarm 0640)."""
    try:
        with open(path, encoding="utf-8") as file:
            mode = os.fstat(file.fileno()).st_mode
            secret = file.readline().strip()
    except FileNotFoundError:
        raise SecretFileError(f"{what} file {path} does not exist") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise SecretFileError(f"{what} file {path} cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s file %s is open to every user (mode %04o); chmod 600 or 640 it",
                    what, path, stat.S_IMODE(mode))
    if not secret:
        raise SecretFileError(f"{what} file {path} is empty: its first line must hold the "
                              f"{what}")
    return secret
