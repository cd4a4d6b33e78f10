"""Simulated STM throughput: 64 x 64 px scans per second against the goal of 1 000 per second.

Run with ``python -m benchmarks bench_sim``. Each scan is a full `SimulatedMicroscope.scan`
(ageing of the tip, topography through the tip, drift, noise, float32 conversion) at a new
place in the approach area, as a survey takes them; one process, one thread; then the same
with a mix of imaging tip states on each surface family (`sim.families`) at 10 nm, and at
frame sides drawn log-uniformly in the family's usual range (`families.FRAME_NM`) with a
new tip per scan, as the classifier's data sets draw them. The ratio to the goal is given
for wall time and for this process's CPU time (what one core gives when others share the
machine). Every figure is measured here; only the goal is a constant.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from deepspm_bluesky.sim import SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.families import FAMILIES, FRAME_NM

from .timing import per_call_s, report

GOAL_IMAGES_S = 1000.0
FRAME_M = 10e-9
PIXELS = 64
REPEAT = 300
IMAGING_STATES = ("good", "double", "blunt", "unstable", "contaminated")
PLACES = 997


def scanner(microscope: SimulatedMicroscope, tips: list[Tip] | None = None,
            frame_nm: tuple[float, float] | None = None):
    """A no-argument call that scans the next place (and puts the next tip in, if given),
    with frames of `FRAME_M`, or of sides log-uniform in `frame_nm`."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-400e-9, 400e-9, (PLACES, 2))
    sides = np.full(PLACES, FRAME_M) if frame_nm is None else \
        1e-9 * np.exp(rng.uniform(*np.log(frame_nm), PLACES))
    frames = itertools.cycle(np.column_stack([xy, sides]).tolist())
    tip_cycle = itertools.cycle(tips) if tips else None

    def scan() -> np.ndarray:
        if tip_cycle is not None:
            microscope.tip = next(tip_cycle)
        x, y, side = next(frames)
        return microscope.scan(x, y, side, PIXELS)

    return scan


def mixed_tips(n_per_state: int, seed: int) -> list[Tip]:
    """`n_per_state` tips of every imaging state, shuffled."""
    rng = np.random.default_rng(seed)
    tips = [random_tip(rng, state) for state in IMAGING_STATES for _ in range(n_per_state)]
    rng.shuffle(tips)
    return tips


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
          f"(goal {GOAL_IMAGES_S:,.0f}/s; ratio of CPU time {1 / (cpu * GOAL_IMAGES_S):.1f}x)")
    report(label, seconds, 1 / GOAL_IMAGES_S, "goal")


def main() -> None:
    good = SimulatedMicroscope(seed=0)
    good_tip = good.tip
    report_rate("sim 64 px scan, good tip", scanner(good, [good_tip]))
    mixed = mixed_tips(20, seed=1)
    report_rate("sim 64 px scan, mix of imaging tip states",
                scanner(SimulatedMicroscope(seed=0), mixed))
    for family in FAMILIES:
        report_rate(f"sim 64 px scan, {family}, mix of imaging tip states",
                    scanner(SimulatedMicroscope(seed=0, family=family), mixed))
    fresh = mixed_tips(400, seed=2)  # more tips than scans in one measurement: none repeats
    for family in FAMILIES:
        lo, hi = FRAME_NM[family]
        report_rate(f"sim 64 px scan, {family}, {lo:g}-{hi:g} nm frames, a new tip per scan",
                    scanner(SimulatedMicroscope(seed=0, family=family), fresh, FRAME_NM[family]))
    setup_s = per_call_s(lambda: SimulatedMicroscope(seed=2), repeat=5, warmup=1)
    print(f"sim new microscope (850 nm area, ~30k molecules): {setup_s * 1e3:.1f} ms")
    for family in FAMILIES:  # a data set draws a new area every 100 images
        area_s = per_call_s(lambda f=family: SimulatedMicroscope(seed=2, family=f).scan(
            0.0, 0.0, FRAME_M, PIXELS), repeat=5, warmup=1)
        print(f"sim new {family} area and its first scan: {area_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
