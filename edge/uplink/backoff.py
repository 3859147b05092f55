"""How long to wait before retrying an upload: capped exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads a fleet of
devices that lost the platform at the same moment, so they do not all come back at once.
Pure functions; the random source is passed in so tests can fix it.
"""

import random
from collections.abc import Callable

# The longest any wait may be, whatever a server's Retry-After asks: an alarm device that
# sleeps for a day because of one odd header would look dead to the platform.
MAX_DELAY_S = 3600.0

# 2**64 seconds is far past any cap; stopping the exponent there keeps the float finite
# for a device that has been retrying for weeks.
_MAX_EXPONENT = 64


def backoff_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0,
                  rng: Callable[[], float] = random.random) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry): uniform in
    [0, min(cap_s, base_s * 2**(attempt-1)))."""
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, not {attempt}")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return rng() * ceiling


def next_delay(attempt: int, retry_after_s: float | None, *, base_s: float = 1.0,
               cap_s: float = 300.0, max_s: float = MAX_DELAY_S,
               rng: Callable[[], float] = random.random) -> float:
    """The wait before retry number ``attempt``, never shorter than the server's
    Retry-After (when it gave one) and never longer than ``max_s``."""
    jittered = backoff_delay(attempt, base_s=base_s, cap_s=cap_s, rng=rng)
    return min(max_s, max(retry_after_s or 0.0, jittered))
