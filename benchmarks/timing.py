"""The one timing helper every benchmark uses."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_s(fn: Callable[[], object], *, repeat: int, warmup: int = 3) -> float:
    """Best-of-three mean wall time of one call of `fn`, in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def report(label: str, ours_s: float, reference_s: float, reference_label: str) -> None:
    """One line: our time, the reference's, and the ratio reference / ours."""
    print(f"{label}: {ours_s * 1e3:.3f} ms vs {reference_label} {reference_s * 1e3:.3f} ms "
          f"-> ratio {reference_s / ours_s:.1f}x")
