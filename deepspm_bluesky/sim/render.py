"""Image formation: the sample seen through the tip, the scanner's motion, and noise.

All functions are vectorised over pixels; the only loops run over the tip's few apexes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .sample import Sample
from .tip import Tip

WHITE_NOISE_M = 2e-12
FLICKER_NOISE_M = 3e-12  # rms of the 1/f noise of the z signal, over one frame
LINE_NOISE_M = 3e-12  # rms offset between scan lines
JUMP_M = 1.5e-10  # rms height step between the two apex configurations of an unstable tip
STREAK_M = 0.8e-10
REFERENCE_SETPOINT_A = 25e-12
STREAK_FILL = 0.25  # fraction of a streaky line's pixels that spike
ALWAYS_DRAWN_M = 1e-10  # a protrusion retracted less than this is drawn without a bound
CENTRE_GAIN_PER_CONTRAST = 3.0  # a brighter-imaging (contaminated) tip lights up the centre
CLEAN_CONTRAST = 0.1  # a tip whose |contrast| is at most this carries nothing that hops
HOPS_PER_CONTRAST = 0.15  # per scan line and unit of |contrast| beyond a clean tip's
MAX_HOPS_PER_LINE = 0.3


def electronic_gain(bias_v: float, setpoint_a: float) -> float:
    """Apparent height of molecules relative to DeepSPM's imaging conditions (1 V, 25 pA).

    Near the Fermi level the molecular orbitals contribute little (weak molecules at low
    bias), filled states image a little weaker than empty ones, and a larger setpoint brings
    the tip closer (slightly stronger corrugation).
    """
    orbital = min(max(0.4 + 0.6 * abs(bias_v), 0.3), 2.0) * (0.8 if bias_v < 0 else 1.0)
    return orbital * (max(setpoint_a, 1e-15) / REFERENCE_SETPOINT_A) ** 0.05


def topography(sample: Sample, tip: Tip, gx: np.ndarray, gy: np.ndarray, *,
               gain: float = 1.0, bias_v: float = 1.0) -> np.ndarray:
    """Constant-current topography: the upper envelope over the tip's protrusions.

    Protrusion i at (dx, dy, dz) sees the sample at (x + dx, y + dy); the tip must rise until
    the last of them clears the surface, so the image is max_i(h(x + dx_i, y + dy_i) - dz_i).
    A second protrusion thus prints a ghost of each feature taller than its retraction dz;
    one retracted further than the relief under it is skipped. Contrast scales the molecules
    (below -1 they invert); a positive contrast also lights up their centres. `gain` is the
    `electronic_gain` of the imaging conditions; `bias_v` reaches surfaces whose contrast
    depends on the polarity (`sim.families`).
    """
    looks = {"adsorbate_gain": gain * (1.0 + tip.contrast),
             "centre_gain": 1.0 + CENTRE_GAIN_PER_CONTRAST * max(tip.contrast, 0.0),
             "bias_v": bias_v}
    out = sample.heights(gx, gy, blur_m=tip.blur_m, **looks)
    extra = tip.apexes[1:]
    if len(extra) == 0:
        return out
    relief = 0.0
    if extra[:, 2].max() > ALWAYS_DRAWN_M:  # only a far-retracted protrusion may be skipped
        reach = np.abs(extra[:, :2]).max() + 4 * tip.blur_m
        relief = sample.relief_bound_m(gx[0] - reach, gx[-1] + reach, gy[0] - reach,
                                       gy[-1] + reach, **looks)
    for dx, dy, dz in extra:
        if dz <= ALWAYS_DRAWN_M or dz < relief:
            ghost = sample.heights(gx + dx, gy + dy, blur_m=tip.blur_m, **looks)
            np.maximum(out, ghost - dz, out=out)
    return out


def sheared(image: np.ndarray, shift_px: np.ndarray, pad: int) -> np.ndarray:
    """Rows shifted by `shift_px` (fractional pixels), cut from an image padded by `pad` columns.

    Linear interpolation with one gather; models lateral drift during a frame.
    """
    rows, cols = image.shape[0], image.shape[1] - 2 * pad
    pos = np.arange(cols)[None, :] + pad + shift_px[:, None]
    left = np.clip(np.floor(pos).astype(int), 0, image.shape[1] - 2)
    frac = pos - left
    r = np.arange(rows)[:, None]
    return image[r, left] * (1 - frac) + image[r, left + 1] * frac


@functools.lru_cache(maxsize=16)
def _noise_amplitudes(n: int) -> np.ndarray:
    """Spectral amplitudes whose inverse rFFT has white and 1/f parts of the set rms.

    With coefficients A_k (a + ib), a, b ~ N(0, 1), `irfft` gives a variance of
    (A_0^2 + 4 sum_{0<k<n/2} A_k^2 + A_{n/2}^2) / n^2; each part is scaled to its rms.
    """
    k = np.maximum(np.arange(n // 2 + 1), 1).astype(float)
    flicker = FLICKER_NOISE_M**2 * n * n / (1 + 4 * np.sum(1 / k[1:-1]) + 1 / k[-1]) / k
    white = WHITE_NOISE_M**2 * n * n / (2 * n - 2)
    return np.sqrt(flicker + white)


def noise(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """White and 1/f noise (one time series over the raster) plus line offsets, in metres.

    White and 1/f noise come from one inverse FFT of a spectrum sqrt(a/f + b), so the z
    signal wanders across lines as a real one does.
    """
    n = rows * cols
    half = n // 2 + 1
    draws = rng.standard_normal(2 * half + rows)
    spectrum = draws[:2 * half].view(np.complex128) * _noise_amplitudes(n)
    out = np.fft.irfft(spectrum, n).reshape(rows, cols)
    out += LINE_NOISE_M * draws[2 * half:, None]
    return out


def instability(rng: np.random.Generator, level: float, rows: int, cols: int) -> np.ndarray | float:
    """Artefacts of an unstable tip: jumps between two apex configurations, and streaks.

    The apex flips between two configurations whose heights differ by a step drawn per frame
    (rms `JUMP_M`); each line flips with probability `level`, at a random pixel, and the
    height holds until the next flip (telegraph noise, as an atom hopping on the apex). Each
    line also streaks with probability `level` (spikes on a quarter of its pixels). Returns
    0.0 for a stable tip.
    """
    if level <= 0:
        return 0.0
    hit = rng.random((2, rows)) < level
    flips, streaks = np.flatnonzero(hit[0]), np.flatnonzero(hit[1])
    toggles = np.zeros(rows * cols, np.int8)
    toggles[flips * cols + rng.integers(0, cols, flips.size)] = 1
    out = (np.cumsum(toggles) & 1).reshape(rows, cols) * rng.normal(0, JUMP_M)
    spikes = rng.random((streaks.size, cols)) < STREAK_FILL
    out[streaks] += spikes * np.abs(rng.normal(0, STREAK_M, (streaks.size, cols)))
    return out


def hopping_rows(rng: np.random.Generator, contrast: float, rows: int) -> np.ndarray | None:
    """Scan lines imaged while the adsorbate on a contaminated apex sits aside, or None.

    A picked-up adsorbate is loosely bound: it hops between the apex and a site beside it,
    so the contrast switches between the contaminated and the clean one at random lines
    (telegraph noise, `HOPS_PER_CONTRAST` per line and unit of |contrast| beyond
    `CLEAN_CONTRAST`). Whatever the surface, the image then shows bands of two contrasts.
    """
    rate = min(MAX_HOPS_PER_LINE, HOPS_PER_CONTRAST * (abs(contrast) - CLEAN_CONTRAST))
    if rate <= 0:
        return None
    flips = rng.random(rows) < rate
    aside = (np.cumsum(flips) + rng.integers(2)) % 2 == 1
    return aside if aside.any() else None


@dataclass(frozen=True)
class Motion:
    """Lateral drift and piezo creep after an approach (SI units, times in seconds).

    The tip's true position is the commanded one plus `lateral(t)`; the z signal carries an
    extra `z(t)`, both relaxing with `tau_s` after the approach at `approached_at_s`.
    """

    approached_at_s: float
    drift_m_s: np.ndarray
    creep_m: np.ndarray
    creep_z_m: float
    tau_s: float

    @classmethod
    def random(cls, rng: np.random.Generator, approached_at_s: float) -> Motion:
        return cls(approached_at_s, rng.normal(0, 1e-12, 2), rng.normal(0, 5e-9, 2),
                   rng.uniform(5e-9, 20e-9), 40.0)

    def lateral(self, t_s: np.ndarray) -> np.ndarray:
        """(n, 2) offsets of the true tip position at times `t_s`."""
        dt = np.asarray(t_s)[:, None] - self.approached_at_s
        return self.drift_m_s * dt + self.creep_m * (1 - np.exp(-dt / self.tau_s))

    def z(self, t_s: np.ndarray) -> np.ndarray:
        """Creep of the z piezo at times `t_s` (decays to zero)."""
        return self.creep_z_m * np.exp(-(np.asarray(t_s) - self.approached_at_s) / self.tau_s)


@dataclass(frozen=True)
class ScannerArtifacts:
    """Artefacts of a real scanner beyond noise and drift, drawn per approach area.

    Attributes
    ----------
    bow_m
        Height of the bow of the fast axis (piezo-tube arc): a parabola over each line.
    creep_m
        Amplitude of the slow-axis creep after a frame start: ``creep_m * exp(-row / tau)``.
    creep_rows
        Decay length of that creep in scan lines.
    line_offset_m
        rms of an extra random offset per scan line (feedback, tip changes).
    """

    bow_m: float = 0.0
    creep_m: float = 0.0
    creep_rows: float = 1.0
    line_offset_m: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator, level: float = 1.0) -> ScannerArtifacts:
        """Artefacts of a random scanner; `level` scales their amplitudes (0: none)."""
        return cls(bow_m=level * rng.uniform(-300e-12, 300e-12),
                   creep_m=level * rng.uniform(-100e-12, 100e-12),
                   creep_rows=rng.uniform(3, 30),
                   line_offset_m=level * rng.uniform(0, 15e-12) * (rng.random() < 0.5))

    def image(self, rng: np.random.Generator, rows: int, cols: int,
              frame_fraction: float) -> np.ndarray | float:
        """The artefacts of one frame (m); a bow scales with the frame's share of the range."""
        if self.bow_m == self.creep_m == self.line_offset_m == 0.0:
            return 0.0
        bow, creep = _bow_and_creep(rows, cols, self.creep_rows)
        lines = self.creep_m * creep + self.line_offset_m * rng.standard_normal(rows)
        return np.add.outer(lines, (self.bow_m * frame_fraction) * bow)


@functools.lru_cache(maxsize=64)
def _bow_and_creep(rows: int, cols: int, creep_rows: float) -> tuple[np.ndarray, np.ndarray]:
    """Shapes of a line's bow, u^2 for u in [-1, 1] (cols,), and of the creep over the
    lines, exp(-row / creep_rows) (rows,): the same for every frame of an area."""
    u = np.linspace(-1, 1, cols)
    shapes = (u * u, np.exp(-np.arange(rows) / creep_rows))
    for shape in shapes:
        shape.setflags(write=False)
    return shapes
