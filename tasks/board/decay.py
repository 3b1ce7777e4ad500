"""Request counts that decay: a request counts half as much after each half-life.

Each request adds 2^((now - E) / half-life) to its tag's score, E being the current
epoch; scores then compare as decayed counts at any moment, and the count today is the
score divided by today's weight: one increment per request, nothing to update later.
Weights grow, so the epoch moves on every EPOCH_SPAN half-lives; as every process
derives it from the clock, none has to be told. A reader adds the previous epoch's
scores scaled down by 2^-EPOCH_SPAN; older epochs have expired.
"""

import math

EPOCH_SPAN = 256  # half-lives an epoch lasts (weights stay below 2^256)
MAX_TAGS = 10_000  # tags kept per epoch, most requested first


def epoch(now: float, half_life: float) -> int:
    """The number of the epoch `now` falls in."""
    return math.floor(now / (half_life * EPOCH_SPAN))


def weight(now: float, half_life: float) -> float:
    """What one request at `now` adds to its tag's score in the current epoch."""
    start = epoch(now, half_life) * half_life * EPOCH_SPAN
    return 2.0 ** ((now - start) / half_life)


PREVIOUS_EPOCH_FACTOR = 2.0**-EPOCH_SPAN  # a previous epoch's score, in today's units


def decayed(score: float, now: float, half_life: float) -> float:
    """A current-epoch score as a count of requests at `now`."""
    return score / weight(now, half_life)


def epoch_ttl(half_life: float) -> int:
    """How long an epoch's scores must be kept: through the epoch after it."""
    return math.ceil(2 * half_life * EPOCH_SPAN)
