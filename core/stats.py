"""The statistics the pages and the doctor use to say how sure a figure is, in one place."""

from __future__ import annotations

import math


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) for a share of `successes` out of `n`: how sure an
    accuracy measured on few samples is (for n = 0, the whole range)."""
    if not n:
        return 0.0, 1.0
    p = successes / n
    centre, spread = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread) / (1 + z * z / n))


def sign_test(worse: int, better: int) -> float:
    """Two-sided exact sign test: how likely so lopsided a split of the flipped questions is by chance."""
    n = worse + better
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(worse, better) + 1)) / 2**n
    return min(1.0, 2 * tail)
