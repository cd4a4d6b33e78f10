"""A simulated low-temperature STM: sample areas, a tip, and the calls a controller offers.

`SimulatedMicroscope` speaks the backend interface of `deepspm_bluesky.devices` (SI units:
metres, volts, seconds), so the Ophyd `STM` device drives it exactly as it drives hardware.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..actions import Action
from .sample import Sample
from .tip import STATES, Tip, random_tip

AREA_SIZE_M = 850e-9  # fine piezo range +-425 nm
Z_RANGE_M = 1.0e-6
CRASHED_HEIGHT_M = 0.4 * Z_RANGE_M
WHITE_NOISE_M = 2e-12
LINE_NOISE_M = 3e-12
MAX_TILT = 0.03
DEGRADE_PER_SCAN = 0.002
# Probability that an action re-forms the apex, by kind and size, and that a re-formed apex
# comes out good. Small pulses rarely change anything; deep dips almost always re-form it.
CHANGE_PROBABILITY = {"stall": 0.0, "pulse": 0.08, "dip": 0.25}
CHANGE_PER_UNIT = {"pulse": 0.06, "dip": 0.12}  # per volt, per nm of dip
GOOD_AFTER_CHANGE = 0.3
BAD_STATES = ("double", "blunt", "unstable", "contaminated")
DIP_CRASH_PER_NM = 0.005
DEBRIS_PER_DIP_NM = 0.4e-9  # debris radius grows with dip depth


class SimulatedMicroscope:
    """A seeded STM model; every call is reproducible from the seed and the call sequence.

    Parameters
    ----------
    seed
        Seed of the random generator (sample areas, tip changes, noise).
    tip_state
        Initial tip state, one of `deepspm_bluesky.sim.tip.STATES`.
    realtime
        0 scans instantly; 1 takes as long as a real scan at `scan_speed_m_s` would.
    sleep
        Injectable sleep, so that tests of the realtime mode need not wait.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tip_state: str = "good",
        realtime: float = 0.0,
        scan_speed_m_s: float = 80e-9,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if tip_state not in STATES:
            raise ValueError(f"unknown tip state {tip_state!r}; known: {STATES}")
        if realtime < 0:
            raise ValueError(f"realtime factor must be >= 0, got {realtime}")
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.realtime = realtime
        self.scan_speed_m_s = scan_speed_m_s
        self._sleep = sleep
        self.tip: Tip = random_tip(self.rng, tip_state)
        self.bias_v = 1.0
        self.setpoint_a = 25e-12
        self.area_index = 0
        self._new_area()

    # -- backend interface -------------------------------------------------------------
    def scan_range_m(self) -> float:
        """Side of the square the fine piezo reaches in one approach area."""
        return AREA_SIZE_M

    def z_range_m(self) -> float:
        return Z_RANGE_M

    def set_bias(self, bias_v: float) -> None:
        self.bias_v = bias_v

    def set_setpoint(self, current_a: float) -> None:
        self.setpoint_a = current_a

    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """Image of `pixels` x `pixels` heights (float32, metres) centred at (x, y)."""
        self._wait(2 * pixels * size_m / self.scan_speed_m_s)
        image = self._render(x_m, y_m, size_m, pixels)
        if self.tip.in_contact and not self.tip.crashed and self.rng.random() < DEGRADE_PER_SCAN:
            self.tip = random_tip(self.rng, self.rng.choice(BAD_STATES))
        return image.astype(np.float32)

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Apply a conditioning action at (x, y); the tip may change, dips leave debris."""
        self._wait(action.duration_s)
        if action.kind == "stall" or self.tip.crashed or not self.tip.in_contact:
            return
        size = abs(action.bias_v) if action.kind == "pulse" else abs(action.dip_nm)
        p_change = CHANGE_PROBABILITY[action.kind] + CHANGE_PER_UNIT[action.kind] * size
        if action.kind == "dip":
            self.sample.debris.add(x_m, y_m, 0.3e-9 * size, DEBRIS_PER_DIP_NM * size)
            if self.rng.random() < DIP_CRASH_PER_NM * size:
                self.tip = self.tip.evolve(crashed=True)
                return
        if self.rng.random() < min(p_change, 0.95):
            good = self.rng.random() < GOOD_AFTER_CHANGE
            self.tip = random_tip(self.rng, "good" if good else self.rng.choice(BAD_STATES))

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """Heavy cleaning after a crash: the tip comes back in contact, usually still bad."""
        self.tip = random_tip(self.rng, self.rng.choice(("good",) + BAD_STATES))
        return True

    def approach(self) -> None:
        self.tip = self.tip.evolve(in_contact=True)

    def withdraw(self) -> None:
        self.tip = self.tip.evolve(in_contact=False)

    def move_area(self) -> int:
        """Coarse move to a fresh approach area; returns the number of crashes on the way."""
        self.area_index += 1
        self._new_area()
        return 0

    # -- internals ---------------------------------------------------------------------
    def _new_area(self) -> None:
        area_rng = np.random.default_rng([self.seed, self.area_index])
        self.sample = Sample.random(area_rng, AREA_SIZE_M)
        self.tilt = area_rng.uniform(-MAX_TILT, MAX_TILT, 2)
        self.z_offset_m = area_rng.uniform(-50e-9, 50e-9)

    def _wait(self, real_seconds: float) -> None:
        if self.realtime > 0:
            self._sleep(real_seconds * self.realtime)

    def _render(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        tip = self.tip
        if tip.crashed:
            return np.full((pixels, pixels), CRASHED_HEIGHT_M)
        if not tip.in_contact:
            return np.full((pixels, pixels), -Z_RANGE_M / 2)
        offsets = (np.arange(pixels) - (pixels - 1) / 2) * (size_m / pixels)
        gx, gy = x_m + offsets, y_m + offsets
        topo = np.max(
            [self.sample.heights(gx - dx, gy - dy) - dz for dx, dy, dz in tip.apexes], axis=0
        )
        sigma_px = tip.blur_m / (size_m / pixels)
        if sigma_px > 0.3:
            topo = ndimage.gaussian_filter(topo, sigma_px, mode="nearest")
        topo *= 1 + tip.contrast
        X, Y = np.meshgrid(gx, gy)
        image = topo + self.tilt[0] * X + self.tilt[1] * Y + self.z_offset_m
        image += self.rng.normal(0, WHITE_NOISE_M, image.shape)
        image += self.rng.normal(0, LINE_NOISE_M, (pixels, 1))
        if tip.instability:
            jumps = self.rng.random(pixels) < tip.instability
            image[jumps] += self.rng.normal(0, 1e-10, (jumps.sum(), 1))
        return image
