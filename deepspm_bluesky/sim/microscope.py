"""A simulated low-temperature STM: sample areas, a tip, and the calls a controller offers.

`SimulatedMicroscope` speaks the backend interface of `deepspm_bluesky.devices` (SI units:
metres, volts, seconds), so the Ophyd `STM` device drives it exactly as it drives hardware.

The model keeps its own instrument clock (`time_s`): scans, actions and approaches advance
it, and drift, creep and the slow ageing of the tip follow it. With ``realtime > 0`` a call
also takes that long in wall time (times the factor), through the injected `sleep`/`clock`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import numpy as np

from ..actions import Action
from . import render
from .conditioning import apply_action, reformed_tip, strength
from .families import DEFAULT_FAMILY, FAMILIES, RANDOM_FAMILY, RANDOMISED, make_sample
from .render import Motion
from .sample import Sample
from .tip import STATES, Tip, degraded, random_tip

AREA_SIZE_M = 850e-9  # fine piezo range +-425 nm (Krull et al. 2020, Methods)
Z_RANGE_M = 1.0e-6
CRASHED_HEIGHT_M = Z_RANGE_M / 2  # stuck in the sample: z piezo fully extended, flat image
WORKING_Z_M = 0.3 * Z_RANGE_M  # after an approach the z piezo sits at ~80 % extension
SETTLE_S = 120.0  # wait after an approach for drift and creep (Krull et al. 2020)
MAX_TILT = 0.03
MAX_UNSHEARED_PX = 0.2  # lateral drift within a frame below this is not drawn
DEGRADE_PER_SCAN = 0.002  # hazard of a spontaneous tip change per scan ...
DEGRADE_TIME_S = 4 * 3600.0  # ... plus one per this much scanning time
DEBRIS_PICKUP = 0.05  # extra hazard when the frame holds a cluster taller than:
DEBRIS_PICKUP_HEIGHT_M = 0.5e-9
PULSE_DEPOSIT = 0.5  # chance that a pulse which re-forms the apex leaves a cluster
CRASHES_PER_COARSE_MOVE = 0.05  # Poisson mean of crashes during a coarse move
GOOD_AFTER_TIP_CLEAN = 0.2


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
    scan_speed_m_s
        Tip speed along a scan line (forward and backward trace per line).
    sleep, clock
        Injectable sleep and monotonic clock, so that tests of the realtime mode need not wait.
    settle_s
        Instrument time an approach takes, waiting for creep to settle.
    family
        Surface family of every approach area (`sim.families.FAMILIES`), or "random" for
        a new family per area; None (default) is MgPc on Ag(100), as it always was.
    artifacts
        Scale of the scanner artefacts drawn per area (bow, creep of the slow axis, line
        offsets; `render.ScannerArtifacts`): 0 none; None (default) 0 without a family, 1
        with one.

    Notes
    -----
    After `scan` returns, `tip` is the tip that took the image, so ``tip.state`` and
    ``tip.is_good`` label it. `last_outcome` names what the last `condition` did (one of
    `deepspm_bluesky.sim.conditioning.OUTCOMES`).

    Examples
    --------
    >>> m = SimulatedMicroscope(seed=3, tip_state="double")
    >>> m.scan(0.0, 0.0, 10e-9, 64).shape, m.tip.state
    ((64, 64), 'double')
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tip_state: str = "good",
        realtime: float = 0.0,
        scan_speed_m_s: float = 80e-9,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        settle_s: float = SETTLE_S,
        family: str | None = None,
        artifacts: float | None = None,
    ) -> None:
        if tip_state not in STATES:
            raise ValueError(f"unknown tip state {tip_state!r}; known: {STATES}")
        if family is not None and family not in (*FAMILIES, *RANDOMISED, RANDOM_FAMILY):
            raise ValueError(f"unknown surface family {family!r}; known: {FAMILIES}, "
                             f"{tuple(RANDOMISED)} or {RANDOM_FAMILY!r}")
        self.family = family
        self.hopping = family is not None
        self.artifacts_level = (0.0 if family is None else 1.0) if artifacts is None \
            else float(artifacts)
        if not self.artifacts_level >= 0:
            raise ValueError(f"artifacts must be >= 0, got {artifacts}")
        if not realtime >= 0:
            raise ValueError(f"realtime factor must be >= 0, got {realtime}")
        self.seed = seed
        # Separate streams, so that the tip's history does not move the frame or its noise.
        self.rng = np.random.default_rng(seed)  # tip, actions, sample changes
        self._noise_rng = np.random.default_rng([seed, 1])
        self._motion_rng = np.random.default_rng([seed, 2])
        self.realtime = realtime
        self.set_scan_speed(scan_speed_m_s)
        self._sleep, self._clock = sleep, clock
        self.settle_s = settle_s
        self.time_s = 0.0
        self._aged_until_s = 0.0
        self.tip: Tip = random_tip(self.rng, tip_state)
        self.bias_v = 1.0
        self.setpoint_a = 25e-12
        self.area_index = 0
        self.last_outcome = "none"
        self._new_area()
        self._settle(wait=False)

    # -- backend interface -------------------------------------------------------------
    def scan_range_m(self) -> float:
        """Side of the square the fine piezo reaches in one approach area."""
        return AREA_SIZE_M

    def z_range_m(self) -> float:
        """Full range of the z piezo; a retracted tip reads -z_range / 2."""
        return Z_RANGE_M

    def set_bias(self, bias_v: float) -> None:
        """Set the imaging bias; molecules image weakly near 0 V (`render.electronic_gain`)."""
        self.bias_v = bias_v

    def set_setpoint(self, current_a: float) -> None:
        """Set the current setpoint; a larger one images molecules slightly stronger."""
        if not current_a > 0:
            raise ValueError(f"current setpoint must be positive, got {current_a} A")
        self.setpoint_a = current_a

    def set_scan_speed(self, speed_m_s: float) -> None:
        """Set the tip speed along a line (optional backend call)."""
        if not (math.isfinite(speed_m_s) and speed_m_s > 0):
            raise ValueError(f"scan speed must be a positive number, got {speed_m_s}")
        self.scan_speed_m_s = speed_m_s

    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """Image of `pixels` x `pixels` heights (float32, metres) centred at (x, y).

        The tip may first age (a spontaneous change, more likely over clusters, with a hazard
        growing with the time since the last scan began); the image is then taken with the
        tip as it is after the call.
        """
        _check_frame(x_m, y_m, size_m, pixels)
        started = self._clock()
        duration = 2 * pixels * size_m / self.scan_speed_m_s
        self._age_tip(self.time_s + duration - self._aged_until_s, x_m, y_m, size_m)
        self._aged_until_s = self.time_s + duration
        image = self._render(x_m, y_m, size_m, int(pixels))
        self.time_s += duration
        self._wait(duration, started)
        return image.astype(np.float32)

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Apply a conditioning action at (x, y); the tip may change, dips leave a crater.

        The outcome probabilities are those of `deepspm_bluesky.sim.conditioning`.
        """
        started = self._clock()
        in_contact = self.tip.in_contact and not self.tip.crashed
        self.tip, self.last_outcome = apply_action(self.tip, action, self.rng)
        x_true, y_true = self._true_position(x_m, y_m)
        if in_contact and action.kind == "dip":
            self.sample.add_dip_mark(self.rng, x_true, y_true, action.dip_nm * 1e-9)
        if action.kind == "pulse" and self.last_outcome == "reform":
            if self.rng.random() < PULSE_DEPOSIT:
                height = (0.3e-9 + 0.7e-9 * strength(action)) * self.rng.uniform(0.7, 1.3)
                self.sample.add_cluster(self.rng, x_true, y_true, height)
        self.time_s += action.duration_s
        self._wait(action.duration_s, started)

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """Heavy cleaning after a crash: a re-formed apex, approached again.

        The cleaning runs beside the frame, so the sample at (x, y) keeps only what the
        crash itself left there.
        """
        self.tip = reformed_tip(self.rng, GOOD_AFTER_TIP_CLEAN)
        self._settle()
        return True

    def approach(self) -> None:
        """Re-approach and wait for creep; a crashed tip stays crashed (needs `tip_clean`)."""
        if not self.tip.crashed:
            self.tip = self.tip.evolve(in_contact=True)
        self._settle()

    def withdraw(self) -> None:
        """Retract the tip to the end of the z range."""
        self.tip = self.tip.evolve(in_contact=False)

    def move_area(self) -> int:
        """Coarse move to a fresh approach area; returns the number of crashes on the way.

        A crash on the way re-forms the apex (usually badly); the tip ends approached.
        """
        self.area_index += 1
        self._new_area()
        crashes = int(self.rng.poisson(CRASHES_PER_COARSE_MOVE))
        if crashes:
            self.tip = reformed_tip(self.rng, 0.1)
        if not self.tip.crashed:
            self.tip = self.tip.evolve(in_contact=True)
        self._settle()
        return crashes

    # -- simulator only -----------------------------------------------------------------
    def idle(self, seconds: float) -> None:
        """Let instrument time pass with the tip parked (drift goes on, creep settles)."""
        if not seconds >= 0:
            raise ValueError(f"idle time must be >= 0 s, got {seconds}")
        self.time_s += seconds

    # -- internals ---------------------------------------------------------------------
    def _new_area(self) -> None:
        area_rng = np.random.default_rng([self.seed, 0, self.area_index])
        if self.family is None:
            self.sample = Sample.random(area_rng, AREA_SIZE_M)
        else:
            family_rng = np.random.default_rng([self.seed, 3, self.area_index])
            family = (FAMILIES[int(family_rng.integers(len(FAMILIES)))]
                      if self.family == RANDOM_FAMILY else self.family)
            self.sample = make_sample(family, area_rng, AREA_SIZE_M)
        self.tilt = area_rng.uniform(-MAX_TILT, MAX_TILT, 2)
        self.scanner = render.ScannerArtifacts()
        if self.artifacts_level > 0:
            self.scanner = render.ScannerArtifacts.random(
                np.random.default_rng([self.seed, 4, self.area_index]), self.artifacts_level)

    @property
    def surface_family(self) -> str:
        """The family of the current approach area."""
        return getattr(self.sample, "family", DEFAULT_FAMILY)

    def _settle(self, wait: bool = True) -> None:
        """A fresh approach: new drift and creep, piezo near its working extension."""
        started = self._clock()
        self.motion = Motion.random(self._motion_rng, self.time_s)
        self.z_offset_m = WORKING_Z_M + self._motion_rng.uniform(-20e-9, 20e-9)
        self.time_s += self.settle_s
        if wait:
            self._wait(self.settle_s, started)

    def _true_position(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Where the tip really is on the sample when sent to (x, y) now (drift, creep)."""
        dx, dy = self.motion.lateral([self.time_s])[0]
        return x_m + dx, y_m + dy

    def _wait(self, instrument_s: float, started: float) -> None:
        """Sleep until `instrument_s` x realtime has passed since `started` (clock time)."""
        if self.realtime > 0:
            remaining = instrument_s * self.realtime - (self._clock() - started)
            if remaining > 0:
                self._sleep(remaining)

    def _age_tip(self, elapsed_s: float, x_m: float, y_m: float, size_m: float) -> None:
        """One chance of a spontaneous change: per scan, per `elapsed_s`, more over clusters."""
        if self.tip.crashed or not self.tip.in_contact:
            return
        hazard = DEGRADE_PER_SCAN + elapsed_s / DEGRADE_TIME_S
        debris = self.sample.debris
        near = debris.near(x_m - size_m / 2, x_m + size_m / 2, y_m - size_m / 2, y_m + size_m / 2)
        if np.any(debris.height[near] > DEBRIS_PICKUP_HEIGHT_M):
            hazard += DEBRIS_PICKUP
        if self.rng.random() < 1 - math.exp(-hazard):
            self.tip = degraded(self.tip, self.rng)

    def _render(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        tip = self.tip
        if tip.crashed:
            return np.full((pixels, pixels), CRASHED_HEIGHT_M)
        if not tip.in_contact:
            return np.full((pixels, pixels), -Z_RANGE_M / 2)
        pitch = size_m / pixels
        line_s = 2 * size_m / self.scan_speed_m_s
        mid_rows, centred = _raster(pixels, 0)
        t_rows = self.time_s + mid_rows * line_s
        offsets = centred * pitch
        drift = self.motion.lateral(t_rows)
        shift_px = (drift[:, 0] - drift[0, 0]) / pitch
        sheared = shift_px.max() - shift_px.min() > MAX_UNSHEARED_PX
        pad = int(np.ceil(np.abs(shift_px).max())) + 1 if sheared else 0
        gx = x_m + drift[0, 0] + (_raster(pixels, pad)[1] if pad else centred) * pitch
        gy = y_m + offsets + drift[:, 1]
        gain = render.electronic_gain(self.bias_v, self.setpoint_a)
        image = render.topography(self.sample, tip, gx, gy, gain=gain, bias_v=self.bias_v)
        aside = render.hopping_rows(self._noise_rng, tip.contrast, pixels) \
            if self.hopping else None
        if aside is not None:  # the lines scanned while the adsorbate sat beside the apex
            clean = tip.evolve(contrast=0.0)
            image[aside] = render.topography(self.sample, clean, gx, gy[aside], gain=gain,
                                             bias_v=self.bias_v)
        if pad:
            image = render.sheared(image, shift_px, pad)
        image += self.tilt[0] * (x_m + offsets)[None, :] + self.tilt[1] * gy[:, None]
        image += (self.z_offset_m + self.motion.z(t_rows))[:, None]
        image += render.noise(self._noise_rng, pixels, pixels)
        image += render.instability(self._noise_rng, tip.instability, pixels, pixels)
        if self.artifacts_level > 0:
            image += self.scanner.image(self._noise_rng, pixels, pixels, size_m / AREA_SIZE_M)
        return image


@functools.lru_cache(maxsize=32)
def _raster(pixels: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices + 0.5 (the middle of each line in time) and column indices centred on
    the frame, padded by `pad` on each side (read-only, cached per frame size)."""
    mid_rows = np.arange(pixels) + 0.5
    centred = np.arange(-pad, pixels + pad) - (pixels - 1) / 2
    for array in (mid_rows, centred):
        array.setflags(write=False)
    return mid_rows, centred


def _check_frame(x_m: float, y_m: float, size_m: float, pixels: int) -> None:
    if not all(math.isfinite(v) for v in (x_m, y_m, size_m)):
        raise ValueError(f"scan frame ({x_m}, {y_m}, {size_m}) has a non-finite value")
    if size_m <= 0:
        raise ValueError(f"scan size must be positive, got {size_m} m")
    if int(pixels) != pixels or pixels < 2:
        raise ValueError(f"pixels must be an integer >= 2, got {pixels}")
