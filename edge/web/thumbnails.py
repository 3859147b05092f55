"""Small copies of the snapshots for the page's list of events, so that a phone loads a
few kilobytes per alarm instead of the camera's full picture. Made with Pillow (imported
at the first one: the page needs it only when there are pictures), decoding the JPEG at
a reduced scale; the latest MAX_CACHED are kept in memory."""

from __future__ import annotations

import io
import logging
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

THUMBNAIL_PX = 320  # the longer side
MAX_CACHED = 64  # a few kilobytes each
QUALITY = 75


class Thumbnails:
    """One thread only (PageReader's)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    def of(self, path: Path) -> bytes | None:
        """The JPEG thumbnail of the picture at ``path``; None when it is no picture."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(key)
        if cached is None:
            cached = _thumbnail(path)
            if cached is None:
                return None
            self._cache[key] = cached
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return cached


def _thumbnail(path: Path) -> bytes | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # decode at 1/2…1/8 scale
            small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=QUALITY)
        return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        log.warning("no thumbnail of %s: %s", path, e)
        return None
