"""A secret kept in a file of its own (the platform token, the broker password, the SIA
key): its first line, read so that nothing here ever shows it. Group read is normal
(root:edge-alarm 0640); a warning when every user may read it."""

from __future__ import annotations

import logging
import os
import stat

from edge.errors import SecretFileError

log = logging.getLogger(__name__)

# Far more than any token or key: a wrong path pointing at a big file is not read whole.
MAX_BYTES = 64 * 1024


def read_secret(path: str, what: str) -> str:
    """The first line of ``path``, stripped; ``what`` names the file and the secret in
    the messages ("token": "token file /etc/edge-alarm/token does not exist")."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            head = file.read(MAX_BYTES)
    except FileNotFoundError:
        raise SecretFileError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise SecretFileError(f"{what} file {path} is a directory") from None
    except OSError as exc:
        raise SecretFileError(f"{what} file {path} cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s file %s is open to every user (mode %04o); chmod 600 or 640 it",
                    what, path, stat.S_IMODE(mode))
    try:
        lines = head.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} file {path} is not UTF-8 text") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise SecretFileError(f"{what} file {path} is empty: its first line must hold the "
                              f"{what}")
    return secret
