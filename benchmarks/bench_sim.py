"""Simulated STM throughput: 64 x 64 px scans per second against the goal of 1 000 per second.

Run with ``python -m benchmarks bench_sim``. Each scan is a full `SimulatedMicroscope.scan`
(ageing of the tip, topography through the tip, drift, noise, float32 conversion) at a new
place in the approach area, as a survey takes them; one process, one thread; then the same
with a mix of imaging tip states on each surface family (`sim.families`). Every figure is
measured here; only the goal is a constant.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from deepspm_bluesky.sim import SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.families import FAMILIES

from .timing import per_call_s, report

GOAL_IMAGES_S = 1000.0
FRAME_M = 10e-9
PIXELS = 64
REPEAT = 300
IMAGING_STATES = ("good", "double", "blunt", "unstable", "contaminated")


def scanner(microscope: SimulatedMicroscope, tips: list[Tip] | None = None):
    """A no-argument call that scans the next place (and puts the next tip in, if given)."""
    rng = np.random.default_rng(0)
    places = itertools.cycle(rng.uniform(-400e-9, 400e-9, (997, 2)).tolist())
    tip_cycle = itertools.cycle(tips) if tips else None

    def scan() -> np.ndarray:
        if tip_cycle is not None:
            microscope.tip = next(tip_cycle)
        x, y = next(places)
        return microscope.scan(x, y, FRAME_M, PIXELS)

    return scan


def cpu_s_per_call(fn, *, repeat: int) -> float:
    """CPU time of this process per call: what one core gives when others share the machine."""
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def report_rate(label: str, fn) -> None:
    seconds = per_call_s(fn, repeat=REPEAT)
    cpu = cpu_s_per_call(fn, repeat=REPEAT)
    print(f"{label}: {1 / seconds:,.0f} images/s wall, {1 / cpu:,.0f} images/s of CPU time "
          f"(goal {GOAL_IMAGES_S:,.0f}/s)")
    report(label, seconds, 1 / GOAL_IMAGES_S, "goal")


def main() -> None:
    good = SimulatedMicroscope(seed=0)
    good_tip = good.tip
    report_rate("sim 64 px scan, good tip", scanner(good, [good_tip]))
    rng = np.random.default_rng(1)
    mixed = [random_tip(rng, state) for state in IMAGING_STATES for _ in range(20)]
    rng.shuffle(mixed)
    report_rate("sim 64 px scan, mix of imaging tip states",
                scanner(SimulatedMicroscope(seed=0), mixed))
    for family in FAMILIES:
        report_rate(f"sim 64 px scan, {family}, mix of imaging tip states",
                    scanner(SimulatedMicroscope(seed=0, family=family), mixed))
    setup_s = per_call_s(lambda: SimulatedMicroscope(seed=2), repeat=5, warmup=1)
    print(f"sim new microscope (850 nm area, ~30k molecules): {setup_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
