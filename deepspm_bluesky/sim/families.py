"""Surface families beyond MgPc on Ag(100): metals, semiconductors, graphite, molecular
layers, vicinal surfaces and clusters, all imaged through the same tip model.

Every family is a `Sample` (terraces, adsorbates, debris) with one more analytic layer, the
surface's own `Texture`: a periodic corrugation, a reconstruction, adatoms, dimer rows, dense
molecular islands. The tip acts on each family the same way, through the two arguments
`render.topography` passes to `Sample.heights`:

- ``blur_m`` damps a corrugation of wave number k by exp(-(k 0.3 blur)^2 / 2) (`ATOMIC_BLUR`)
  and widens every Gaussian feature (a blunt tip loses the atoms and the molecules alike);
- ``adsorbate_gain`` scales the apparent height of the features that carry the surface's
  contrast (molecules, adatoms, atoms, dangling bonds; negative inverts them), so a
  contaminated tip changes the contrast of graphite's atoms as it does that of molecules;
- double tips and instability act on the heights after they are drawn (`render`), and a
  contaminated apex's adsorbate hops on and off it, switching the contrast in bands of scan
  lines (`render.hopping_rows`);
- every family carries a few point adsorbates or defects in a frame of its usual size
  (`ADSORBATES_PER_NM2`), which a double tip doubles, a blunt one widens and a contaminated
  one brightens or inverts, whatever the surface's own texture.

Beside the named families, `RANDOMISED` holds made-up surfaces a microscope can be given
by name as well: "lattice", a random crystal per approach area (oblique cell of 0.3-2.5 nm,
one to six atoms of random height, width and place in it), for a classifier to meet atomic
lattices beyond the named few, or to be tested on a surface it never saw.

A feature is drawn only where the pixels resolve it (pixel <= a third of its period or
width), as the existing Ag(100) lattice is, so a 100 nm frame costs no more than a 10 nm one.

References
----------
Au(111) herringbone: Barth et al., Phys. Rev. B 42, 9307 (1990),
https://doi.org/10.1103/PhysRevB.42.9307. Si(111)-7x7 (DAS model): Takayanagi et al.,
J. Vac. Sci. Technol. A 3, 1502 (1985), https://doi.org/10.1116/1.573160. H:Si(100)-2x1
dimer rows: Boland, Phys. Rev. Lett. 65, 3325 (1990),
https://doi.org/10.1103/PhysRevLett.65.3325.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .sample import (
    CLUSTER_SIGMA_M,
    Bumps,
    Gaussians,
    Molecules,
    Sample,
    Steps,
    cos_sin,
    summed_outer,
)

DEFAULT_FAMILY = "ag100_mgpc"
RESOLVED = 3.0  # a feature is drawn when its period (or 4 sigma) spans this many pixels
FOURIER_CUTOFF = 3.5  # periodic Gaussians: terms up to |G| sqrt(var) = 3.5 (exp(-6.1) left)
# Atomic corrugation is imaged through the apex atom's orbital, not the tip's whole radius:
# a lattice of wave number k is damped by exp(-(k * ATOMIC_BLUR * blur)^2 / 2), so a good
# tip (blur 0.05-0.2 nm) resolves graphite's atoms and a blunt one (> 0.35 nm) does not.
ATOMIC_BLUR = 0.3


def _hex_vectors(a_m: float, angle: float) -> np.ndarray:
    """Primitive vectors (2, 2) of a hexagonal lattice of constant `a_m`."""
    phis = angle + np.array([0.0, np.pi / 3])
    return a_m * np.stack([np.cos(phis), np.sin(phis)], axis=1)


def _lattice_grid(vectors: np.ndarray, box: tuple[float, float, float, float],
                  margin_m: float, inverse: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Indices i (n,) and j (m,) of the points ``i a1 + j a2`` around the box grown by
    `margin_m`, their coordinates x and y (n, m) and whether each falls inside that box
    (n, m). `inverse` is ``inv(vectors)``, if known."""
    x0, x1, y0, y1 = box[0] - margin_m, box[1] + margin_m, box[2] - margin_m, box[3] + margin_m
    corners = np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]])
    ij = corners @ (np.linalg.inv(vectors) if inverse is None else inverse)
    lo, hi = np.floor(ij.min(axis=0)).astype(int), np.ceil(ij.max(axis=0)).astype(int)
    i, j = np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1)
    x = np.add.outer(i * vectors[0, 0], j * vectors[1, 0])
    y = np.add.outer(i * vectors[0, 1], j * vectors[1, 1])
    return i, j, x, y, (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def cos_sin_outer(k: np.ndarray, x: np.ndarray,
                  phases: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (float32, `sample.cos_sin`) of the phases outer(k, x) (+ `phases`, one
    per k): float32 rounds them by < 2e-7, far below what a float32 image of heights near
    the piezo's extension resolves."""
    phase = np.outer(k, x)
    if phases is not None:
        phase += phases[:, None]
    return cos_sin(phase, np.float32)


def _pixel(gx: np.ndarray) -> float:
    return abs(gx[-1] - gx[0]) / max(gx.size - 1, 1)


def _waves(gx: np.ndarray, gy: np.ndarray, kvecs: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """sum_i cos(k_i . r + phase_i) on the grid: cos(a + b) = cos a cos b - sin a sin b
    makes it one product of (2 waves, rows) and (2 waves, columns) factors."""
    cos_y, sin_y = cos_sin_outer(kvecs[:, 1], gy)
    cos_x, sin_x = cos_sin_outer(kvecs[:, 0], gx, phases)
    return summed_outer(np.concatenate([cos_y, -sin_y]).astype(float),
                        np.concatenate([cos_x, sin_x]).astype(float))


@dataclass
class Texture:
    """The periodic or dense layer of a family (nothing for Ag(100)/MgPc).

    Parameters
    ----------
    kind
        "none", "hexagonal" (close-packed atoms; graphite's 3-of-6), "herringbone"
        (hexagonal atoms plus Au(111)'s zig-zag ridge pairs), "adatoms_7x7", "dimer_rows",
        "islands" (dense molecular layer in islands).
    a_m
        Lattice constant of the corrugation (atoms, rows or molecules).
    corrugation_m
        Peak-to-peak height of the atomic corrugation (or feature height).
    angle
        Orientation in radians.
    phase
        Random phase of the lattice (2,).
    extra
        Kind-specific numbers (ridge period, island wave vectors, ...).
    """

    kind: str = "none"
    a_m: float = 0.0
    corrugation_m: float = 0.0
    angle: float = 0.0
    phase: np.ndarray = field(default_factory=lambda: np.zeros(2))
    extra: dict = field(default_factory=dict)

    def heights(self, gx: np.ndarray, gy: np.ndarray, *, blur_m: float, gain: float,
                bias_v: float, levels: np.ndarray | None = None,
                step_height_m: float = 1.0) -> np.ndarray | float:
        """The texture's heights on the grid (0.0 when nothing is resolved)."""
        if self.kind == "none":
            return 0.0
        pixel = _pixel(gx)
        out = 0.0
        if self.kind in ("hexagonal", "herringbone"):
            out = self._hexagonal(gx, gy, pixel, blur_m, gain)
            if self.kind == "herringbone":
                out = out + gain * self._herringbone(gx, gy, pixel, blur_m)
        elif self.kind == "dimer_rows":
            out = self._dimer_rows(gx, gy, pixel, blur_m, gain, levels, step_height_m)
        elif self.kind == "adatoms_7x7":
            out = self._adatoms(gx, gy, pixel, blur_m, gain, bias_v)
        elif self.kind == "motif":
            out = self._motif(gx, gy, pixel, blur_m, gain)
        return out

    def bumps(self, gx: np.ndarray, gy: np.ndarray, *, blur_m: float, gain: float,
              bias_v: float) -> Bumps | None:
        """The texture's Gaussians (adatoms, molecules) on the grid, or None."""
        pixel = _pixel(gx)
        if self.kind == "islands":
            return self._islands(gx, gy, pixel, blur_m, gain)
        return None

    def relief_m(self, gain: float) -> float:
        """An upper bound of the texture's max - min."""
        ridge = self.extra.get("ridge_m", 0.0)
        atoms = float(np.abs(self.extra["heights"]).sum()) if self.kind == "motif" else 1.0
        return abs(gain) * (atoms * self.corrugation_m + ridge) + self.extra.get("hole_m", 0.0)

    # -- kinds ---------------------------------------------------------------------------
    def _hexagonal(self, gx, gy, pixel, blur_m, gain):
        if pixel > self.a_m / RESOLVED:
            return 0.0
        k = 4 * np.pi / (np.sqrt(3) * self.a_m)
        damp = np.exp(-((k * ATOMIC_BLUR * blur_m) ** 2) / 2)
        if damp < 1e-3:
            return 0.0
        # sum of three cosines lies in [-1.5, 3]: maxima on a triangular lattice
        return (gain * damp * self.corrugation_m / 4.5) * (_waves(gx, gy, *self._hex_waves)
                                                           + 1.5)

    @functools.cached_property
    def _hex_waves(self) -> tuple[np.ndarray, np.ndarray]:
        """Wave vectors (3, 2) and phases (3,) of the hexagonal corrugation."""
        k = 4 * np.pi / (np.sqrt(3) * self.a_m)
        phis = self.angle + np.pi / 6 + np.arange(3) * 2 * np.pi / 3
        kvecs = k * np.stack([np.cos(phis), np.sin(phis)], 1)
        return kvecs, np.array([self.phase[0], self.phase[1], -self.phase[0] - self.phase[1]])

    def _herringbone(self, gx, gy, pixel, blur_m):
        """Pairs of ridges 6.3 nm apart, bending by 120 degrees every half zig-zag period."""
        period, width = self.extra["ridge_period_m"], self.extra["ridge_sigma_m"]
        if pixel > 4 * np.hypot(width, blur_m) / RESOLVED:
            return 0.0
        c, s = np.cos(self.angle), np.sin(self.angle)
        zig = self.extra["zigzag_m"]
        # across the ridges in periods (plus the phase), along them in two zig-zag lengths;
        # fractional parts as x - floor(x) (numpy's float64 remainder is 25x slower)
        phase = np.add.outer((s / period) * gy + self.phase[0], (c / period) * gx)
        along = np.add.outer((c / (2 * zig)) * gy, (-s / (2 * zig)) * gx)
        along -= np.floor(along)
        along *= 2.0
        along -= 1.0
        np.abs(along, out=along)  # a triangle wave
        along *= zig * np.tan(np.pi / 6) / period
        phase += along
        phase -= np.floor(phase)
        phase = phase.astype(np.float32)  # in [0, 1): float32 places a ridge to 2e-16 m
        sigma2 = width**2 + blur_m**2
        out = np.zeros_like(phase)
        for centre in (0.35, 0.65):  # the two soliton walls of one period
            d = phase - np.float32(centre)
            d *= d
            d *= np.float32(-period * period / (2 * sigma2))
            out += np.exp(d, out=d)
        return (self.extra["ridge_m"] * width / np.sqrt(sigma2)) * out.astype(float)

    def _adatoms(self, gx, gy, pixel, blur_m, gain, bias_v):
        """Si(111)-7x7: 12 adatoms per cell, faulted half brighter in filled states, corner
        holes as depressions; drawn as the Fourier series of the periodic sum of their
        Gaussians (one small complex matrix product, whatever the frame holds)."""
        sigma = self.extra["adatom_sigma_m"]
        if pixel > 4 * np.hypot(sigma, blur_m) / RESOLVED:
            return 0.0
        vectors, basis, faulted, sigmas = self._seven_by_seven
        faulted_gain = 1.25 if bias_v < 0 else 1.05
        heights = np.append(self.corrugation_m * gain * np.where(faulted, faulted_gain, 1.0),
                            -self.extra["hole_m"])
        return _periodic_gaussians(gx, gy, vectors, basis, heights, sigmas, blur_m)

    def _motif(self, gx, gy, pixel, blur_m, gain):
        """A random crystal: an oblique cell (`extra["vectors"]`) holding a few Gaussians
        of random place, height (some negative: holes) and width."""
        sigmas = self.extra["sigmas_m"]
        if pixel > 4 * np.hypot(sigmas.min(), blur_m) / RESOLVED:
            return 0.0
        return _periodic_gaussians(gx, gy, self.extra["vectors"], self.extra["basis"],
                                   gain * self.corrugation_m * self.extra["heights"],
                                   sigmas, blur_m)

    @functools.cached_property
    def _island_lattice(self) -> tuple[np.ndarray, ...]:
        """Lattice vectors of the molecular layer, their inverse, its offset, and the island
        field's wave vectors projected on each lattice vector with the phases at i = j = 0."""
        vectors = _hex_vectors(self.a_m, self.angle)
        offset = self.phase @ vectors
        kvecs = self.extra["island_k"]
        return (vectors, np.linalg.inv(vectors), offset, vectors[0] @ kvecs.T,
                vectors[1] @ kvecs.T, offset @ kvecs.T + self.extra["island_phase"])

    @functools.cached_property
    def _seven_by_seven(self) -> tuple[np.ndarray, ...]:
        """Cell vectors, basis (12 adatoms and the corner hole), which adatoms are faulted,
        and the widths of the 13 Gaussians of Si(111)-7x7."""
        vectors = _hex_vectors(self.a_m, self.angle)
        basis, faulted = _seven_by_seven_basis(vectors)
        basis = np.concatenate([basis, np.zeros((1, 2))]) + self.phase @ vectors
        sigmas = np.append(np.full(len(faulted), self.extra["adatom_sigma_m"]),
                           self.extra["hole_sigma_m"])
        return vectors, basis, faulted, sigmas

    def _dimer_rows(self, gx, gy, pixel, blur_m, gain, levels, step_height_m):
        """Rows of dimers (period 0.768 nm) turning by 90 degrees on every other terrace."""
        period = self.a_m
        if pixel > period / RESOLVED:
            return 0.0
        k = 2 * np.pi / period
        damp = np.exp(-((k * ATOMIC_BLUR * blur_m) ** 2) / 2)
        if damp < 1e-3:
            return 0.0
        amp = gain * damp * self.corrugation_m / 2
        c, s = np.cos(self.angle), np.sin(self.angle)

        def rows(turned: bool) -> np.ndarray:
            kvec, phase = ([[-k * s, k * c]], self.phase[1:]) if turned else \
                ([[k * c, k * s]], self.phase[:1])
            return amp * (1 + _waves(gx, gy, np.array(kvec), phase))

        if levels is None:
            return rows(False)
        odd = (np.floor(levels / step_height_m + 0.5).astype(np.int64) & 1).astype(bool)
        if odd.all() or not odd.any():  # one terrace (or one parity): one orientation
            return rows(bool(odd.all()))
        return np.where(odd, rows(True), rows(False))

    def _islands(self, gx, gy, pixel, blur_m, gain):
        """A close-packed molecular layer cut into islands by a smooth random field."""
        a = self.a_m
        sigma = self.extra["molecule_sigma_m"]
        vectors, inverse, offset, k_a1, k_a2, phases = self._island_lattice
        i, j, x, y, inside = _lattice_grid(vectors, (gx[0], gx[-1], gy[0], gy[-1]),
                                           4 * sigma, inverse)
        # the field sum_k cos(k . (i a1 + j a2 + offset) + phase_k) of the grid (i, j), as
        # cos(A_i + B_j) = cos A_i cos B_j - sin A_i sin B_j: one small product
        a_i, b_j = np.outer(i, k_a1), np.outer(j, k_a2) + phases
        field = np.hstack([np.cos(a_i), np.sin(a_i)]) @ np.hstack([np.cos(b_j),
                                                                   -np.sin(b_j)]).T
        keep = inside & (field > self.extra["island_level"])
        points = np.stack([x[keep], y[keep]], axis=1) + offset
        if pixel > 4 * np.hypot(sigma, blur_m) / RESOLVED:  # unresolved: islands as plateaus
            sigma = max(sigma, 0.6 * a, pixel)
        return (points, np.full(len(points), gain * self.corrugation_m),
                np.full(len(points), sigma))


def _seven_by_seven_basis(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Adatom positions of one 7x7 cell (12, 2) and whether each sits in the faulted half.

    Each triangular half of the cell holds six adatoms two 1x1 spacings apart, at (i, j)
    a/7 with i, j odd and i + j <= 6 (the other half mirrored through the cell's centre);
    the corner holes sit at the cell's corners (Takayanagi et al. 1985).
    """
    ij = np.array([(1, 1), (3, 1), (5, 1), (1, 3), (3, 3), (1, 5)]) / 7
    frac = np.concatenate([ij, 1 - ij])
    return frac @ vectors, np.repeat([True, False], 6)


def _periodic_gaussians(gx: np.ndarray, gy: np.ndarray, vectors: np.ndarray,
                        basis: np.ndarray, heights: np.ndarray, sigmas: np.ndarray,
                        blur_m: float) -> np.ndarray:
    """A lattice (primitive `vectors`) of Gaussians at `basis` (peak `heights`, widths
    `sigmas`, seen through a tip of radius `blur_m` as `sample.gaussian_image` draws them),
    summed as its Fourier series, terms up to |G| sqrt(sigma^2 + blur^2) = 3.5.

    Each Gaussian h exp(-r^2 / 2 v) contributes (2 pi v h / A) exp(-|G|^2 v / 2) exp(-i G r_j)
    to the coefficient c_G of the reciprocal vector G (A: the cell's area); the image is
    Re sum_G c_G exp(i G_y y) exp(i G_x x) = sum_G a_G(y) cos(G_x x) - b_G(y) sin(G_x x)
    with a + ib = c_G exp(i G_y y): one real product of (2 terms, rows) and (2 terms,
    columns) factors. The reciprocal vectors and phases exp(-i G r_j) of an area are
    cached; a tip's blur and contrast only weigh them.
    """
    g, g_norm, g2, phases, area = _reciprocal_terms(tuple(np.ravel(vectors).tolist()),
                                                    tuple(np.ravel(basis).tolist()),
                                                    float(sigmas.min()))
    var = sigmas**2 + blur_m**2
    m = int(np.searchsorted(g_norm, FOURIER_CUTOFF / np.sqrt(var.min()), side="right"))
    weights = (2 * np.pi / area) * heights * sigmas * np.sqrt(var)  # (2 pi / A) peak var
    c = ((phases[:m] * np.exp(-0.5 * g2[:m, None] * var)) @ weights).astype(np.complex64)
    cos_y, sin_y = cos_sin_outer(g[:m, 1], gy)
    cr, ci = c.real[:, None], c.imag[:, None]
    rows = np.concatenate([cr * cos_y - ci * sin_y, -(cr * sin_y + ci * cos_y)])
    # float32 (rounding ~1e-17 m), in blocks that keep OpenBLAS on one thread
    image = summed_outer(rows, np.concatenate(cos_sin_outer(g[:m, 0], gx)))
    return image.astype(float, copy=False)


@functools.lru_cache(maxsize=64)
def _reciprocal_terms(vectors: tuple, basis: tuple, sigma_min_m: float) -> tuple:
    """Reciprocal vectors G (m, 2) of the lattice `vectors` up to |G| sigma_min = 3.5 (the
    cut-off of the sharpest tip), their norms |G| (ascending) and squares, the phases
    w exp(-i G r_j) (m, basis) of the basis (w = 1 for G = 0, else 2: G and -G give
    conjugate terms, so one of the two is kept, twice), and the cell's area."""
    vectors, basis = np.reshape(vectors, (2, 2)), np.reshape(basis, (-1, 2))
    reciprocal = 2 * np.pi * np.linalg.inv(vectors).T  # rows b_i with a_i . b_j = 2 pi d_ij
    g_max = FOURIER_CUTOFF / sigma_min_m
    n = int(np.ceil(g_max / np.linalg.norm(reciprocal, axis=1).min())) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    half = (i > 0) | ((i == 0) & (j >= 0))
    g = np.stack([i[half], j[half]], 1) @ reciprocal
    g_norm = np.hypot(g[:, 0], g[:, 1])
    order = np.argsort(g_norm, kind="stable")
    order = order[g_norm[order] <= g_max]
    g, g_norm = g[order], g_norm[order]
    weight = np.where(g_norm == 0, 1.0, 2.0)
    terms = (g, g_norm, (g * g).sum(axis=1), weight[:, None] * np.exp(-1j * (g @ basis.T)))
    for array in terms:
        array.setflags(write=False)
    return (*terms, abs(float(np.linalg.det(vectors))))


@dataclass
class FamilySample(Sample):
    """A `Sample` of one surface family: its terraces (own step height), adsorbates, debris
    and `Texture`. Heights are evaluated as `Sample.heights` plus the texture."""

    family: str = DEFAULT_FAMILY
    texture: Texture = field(default_factory=Texture)
    adsorbates: Gaussians = field(default_factory=Gaussians)

    dtype: ClassVar[type] = np.float32

    def heights(self, gx: np.ndarray, gy: np.ndarray, *, blur_m: float = 0.0,
                adsorbate_gain: float = 1.0, centre_gain: float = 1.0,
                bias_v: float = 1.0) -> np.ndarray:
        """Topography at the grid (see `Sample.heights`), with the family's texture."""
        reach = 4 * blur_m
        xy, height, sigma = self.adsorbates.bumps(gx[0] - reach, gx[-1] + reach,
                                                  gy[0] - reach, gy[-1] + reach)
        extra = (xy, adsorbate_gain * height, sigma)
        texture = self.texture.bumps(gx, gy, blur_m=blur_m, gain=adsorbate_gain, bias_v=bias_v)
        if texture is not None:  # one matrix product for every Gaussian of the frame
            extra = tuple(np.concatenate([a, b]) for a, b in zip(extra, texture, strict=True))
        out = super().heights(gx, gy, blur_m=blur_m, adsorbate_gain=adsorbate_gain,
                              centre_gain=centre_gain, bias_v=bias_v, extra_bumps=extra)
        levels = None
        if self.texture.kind == "dimer_rows":  # the terrace level, constant without edges
            near, level = self.steps.near(gx[0], gx[-1], gy[0], gy[-1])
            levels = self.steps.image(gx, gy, 0.0, self.dtype) if near.any() else level
        out += self.texture.heights(gx, gy, blur_m=blur_m, gain=adsorbate_gain,
                                    bias_v=bias_v, levels=levels,
                                    step_height_m=self.steps.height_m)
        return out

    def relief_bound_m(self, x0: float, x1: float, y0: float, y1: float, *,
                       adsorbate_gain: float = 1.0, centre_gain: float = 1.0,
                       bias_v: float = 1.0) -> float:
        height = self.adsorbates.height.take(self.adsorbates.near(x0, x1, y0, y1))
        return (super().relief_bound_m(x0, x1, y0, y1, adsorbate_gain=adsorbate_gain,
                                       centre_gain=centre_gain, bias_v=bias_v)
                + self.texture.relief_m(1.3 * adsorbate_gain)
                + abs(adsorbate_gain) * float(height.max(initial=0.0)))


# -- the families ------------------------------------------------------------------------
def _clusters(rng: np.random.Generator, size_m: float, per_m2: float,
              height_m: tuple[float, float], scale: float = 1.0) -> Gaussians:
    """Irregular clusters (five Gaussians each, as `sample.cluster` draws them), vectorised."""
    n = rng.poisson(per_m2 * size_m * size_m)
    parts = 5
    sigma = rng.uniform(*CLUSTER_SIGMA_M, (n, parts)) / 2 * scale
    centres = rng.uniform(-size_m / 2, size_m / 2, (n, 1, 2))
    xy = centres + rng.normal(0, 1, (n, parts, 2)) * sigma[..., None]
    height = rng.uniform(*height_m, (n, 1)) * rng.uniform(0.5, 1.0, (n, parts))
    return Gaussians(xy.reshape(-1, 2), height.ravel(), sigma.ravel())


def _steps(rng: np.random.Generator, size_m: float, height_m: float, n: int,
           spacing_m: tuple[float, float] | None = None) -> Steps:
    """`n` steps of `height_m`; with `spacing_m`, a vicinal staircase (parallel, bunched)."""
    if spacing_m is None:
        steps = Steps.random(rng, size_m)
        keep = np.arange(len(steps.signs)) < n
        return Steps(steps.normals[keep], steps.offsets_m[keep], steps.signs[keep],
                     steps.meander_m[keep], steps.wavenumber[keep], steps.phase[keep], height_m)
    angle = rng.uniform(0, np.pi)
    gaps = rng.uniform(*spacing_m, n)
    bunched = rng.random(n) < 0.4  # step bunches: a few steps close together
    gaps[bunched] = rng.uniform(0.6e-9, 1.5e-9, np.count_nonzero(bunched))
    offsets = np.cumsum(gaps)
    offsets -= offsets.mean()
    return Steps(
        normals=np.tile([np.cos(angle), np.sin(angle)], (n, 1)),
        offsets_m=offsets,
        signs=np.full(n, rng.choice([-1.0, 1.0])),
        meander_m=rng.uniform(0, 1.5e-9, n),
        wavenumber=2 * np.pi / rng.uniform(20e-9, 200e-9, n),
        phase=rng.uniform(0, 2 * np.pi, n),
        height_m=height_m,
    )


def _no_molecules() -> Molecules:
    return Molecules(np.empty((0, 2)), np.empty(0))


def _au111(rng, size_m):
    texture = Texture("herringbone", 0.288e-9, rng.uniform(8e-12, 25e-12),
                      rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi, 2),
                      {"ridge_period_m": 6.3e-9, "ridge_sigma_m": 0.45e-9,
                       "ridge_m": rng.uniform(12e-12, 25e-12), "zigzag_m": 12e-9})
    return (_steps(rng, size_m, 2.35e-10, int(rng.integers(0, 4))), _no_molecules(),
            _clusters(rng, size_m, 2e-5 * 1e18, (0.2e-9, 1.2e-9)), texture)


def _si111(rng, size_m):
    texture = Texture("adatoms_7x7", 2.69e-9, rng.uniform(60e-12, 110e-12),
                      rng.uniform(0, np.pi / 3), rng.uniform(0, 1, 2),
                      {"adatom_sigma_m": 0.22e-9, "hole_m": rng.uniform(60e-12, 120e-12),
                       "hole_sigma_m": 0.35e-9})
    return (_steps(rng, size_m, 3.14e-10, int(rng.integers(0, 3))), _no_molecules(),
            _clusters(rng, size_m, 1e-5 * 1e18, (0.3e-9, 1.0e-9)), texture)


def _hsi100(rng, size_m):
    texture = Texture("dimer_rows", 0.768e-9, rng.uniform(25e-12, 60e-12),
                      rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.02),
                      rng.uniform(0, 2 * np.pi, 2))
    n_db = rng.poisson(0.01e18 * size_m * size_m)  # dangling bonds: bright, 0.01 / nm^2
    debris = _clusters(rng, size_m, 0.5e-5 * 1e18, (0.3e-9, 1.0e-9))
    debris.add(rng.uniform(-size_m / 2, size_m / 2, (n_db, 2)),
               rng.uniform(60e-12, 120e-12, n_db), np.full(n_db, 0.35e-9))
    return (_steps(rng, size_m, 1.36e-10, int(rng.integers(1, 5))), _no_molecules(), debris,
            texture)


def _graphite(rng, size_m):
    texture = Texture("hexagonal", 0.246e-9, rng.uniform(30e-12, 120e-12),
                      rng.uniform(0, np.pi / 3), rng.uniform(0, 2 * np.pi, 2))
    return (_steps(rng, size_m, 3.35e-10, int(rng.integers(0, 2))), _no_molecules(),
            _clusters(rng, size_m, 0.5e-5 * 1e18, (0.3e-9, 1.5e-9)), texture)


def _molecular_islands(rng, size_m):
    kvecs = 2 * np.pi / rng.uniform(15e-9, 60e-9, (4, 1)) * _unit(rng.uniform(0, np.pi, 4))
    texture = Texture("islands", rng.uniform(1.2e-9, 2.0e-9), rng.uniform(80e-12, 200e-12),
                      rng.uniform(0, np.pi / 3), rng.uniform(0, 1, 2),
                      {"molecule_sigma_m": rng.uniform(0.3e-9, 0.5e-9), "island_k": kvecs,
                       "island_phase": rng.uniform(0, 2 * np.pi, 4),
                       "island_level": rng.uniform(-1.0, 1.0)})
    steps = _steps(rng, size_m, rng.choice([2.04e-10, 2.35e-10, 2.08e-10]),
                   int(rng.integers(0, 4)))
    return (steps, _no_molecules(), _clusters(rng, size_m, 1e-5 * 1e18, (0.3e-9, 1.2e-9)),
            texture)


def _step_bunches(rng, size_m):
    texture = Texture("hexagonal", rng.choice([0.288e-9, 0.256e-9, 0.278e-9]),
                      rng.uniform(3e-12, 15e-12), rng.uniform(0, np.pi / 3),
                      rng.uniform(0, 2 * np.pi, 2))
    n = int(size_m / 6e-9)
    steps = _steps(rng, size_m, rng.choice([2.04e-10, 2.35e-10, 2.55e-10]), n,
                   spacing_m=(3e-9, 15e-9))
    return (steps, _no_molecules(), _clusters(rng, size_m, 0.5e-5 * 1e18, (0.3e-9, 1.0e-9)),
            texture)


def _clusters_family(rng, size_m):
    texture = Texture("hexagonal", 0.288e-9, rng.uniform(3e-12, 15e-12),
                      rng.uniform(0, np.pi / 3), rng.uniform(0, 2 * np.pi, 2))
    debris = _clusters(rng, size_m, rng.uniform(0.005, 0.02) * 1e18, (0.08e-9, 0.35e-9),
                       scale=rng.uniform(0.6, 2.0))
    big = _clusters(rng, size_m, 1e-5 * 1e18, (0.5e-9, 2.5e-9), scale=2.0)
    debris.add(big.xy, big.height, big.sigma)
    return (_steps(rng, size_m, 2.35e-10, int(rng.integers(0, 3))), _no_molecules(), debris,
            texture)


def _lattice(rng, size_m):
    """No real surface: a random crystal (cell 0.3-2.5 nm, one to six atoms of random
    height and width in it) with terraces and clusters, so that a classifier sees atomic
    lattices beyond the named families' few."""
    a = np.exp(rng.uniform(np.log(0.3e-9), np.log(2.5e-9)))
    angle, between = rng.uniform(0, np.pi), rng.uniform(np.pi / 3, 2 * np.pi / 3)
    vectors = np.array([[np.cos(angle), np.sin(angle)],
                        [np.cos(angle + between), np.sin(angle + between)]])
    vectors *= np.array([[a], [a * rng.uniform(0.7, 1.4)]])
    n = int(rng.integers(1, 7))
    heights = rng.uniform(0.3, 1.0, n) * np.where(rng.random(n) < 0.2, -1.0, 1.0)
    texture = Texture("motif", a, rng.uniform(15e-12, 120e-12), angle, np.zeros(2),
                      {"vectors": vectors, "basis": rng.uniform(0, 1, (n, 2)) @ vectors,
                       "heights": heights, "sigmas_m": rng.uniform(0.1, 0.3, n) * a})
    return (_steps(rng, size_m, rng.uniform(1.3e-10, 3.5e-10), int(rng.integers(0, 3))),
            _no_molecules(), _clusters(rng, size_m, 1e-5 * 1e18, (0.3e-9, 1.2e-9)), texture)


def _unit(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_MAKERS = {
    "au111": _au111,
    "si111_7x7": _si111,
    "h_si100": _hsi100,
    "graphite": _graphite,
    "molecular_islands": _molecular_islands,
    "step_bunches": _step_bunches,
    "clusters": _clusters_family,
}
RANDOMISED = {"lattice": _lattice}  # made-up surfaces for training, not in `FAMILIES`
_EVERY_MAKER = {**_MAKERS, **RANDOMISED}
FAMILIES = (DEFAULT_FAMILY, *_MAKERS)
"""Surface families: the default MgPc on Ag(100), then Au(111) with its herringbone,
Si(111)-7x7 adatoms, H:Si(100) dimer rows, graphite, dense molecular islands, vicinal
surfaces with step bunches, and adsorbate clusters of all sizes."""
RANDOM_FAMILY = "random"
ADSORBATES_PER_NM2 = {  # coverage of point adsorbates and defects (per nm^2): a few in a
    # frame of the family's usual size (`FRAME_NM`), so that every frame shows the tip
    "au111": (0.02, 0.08), "si111_7x7": (0.02, 0.06), "h_si100": (0.05, 0.15),
    "graphite": (0.2, 0.6), "molecular_islands": (0.01, 0.03),
    "step_bunches": (0.03, 0.08), "clusters": (0.03, 0.08), "lattice": (0.02, 0.08),
}
FRAME_NM = {  # frame sides (nm) at which each family is usually imaged and shows its texture
    DEFAULT_FAMILY: (8.0, 15.0), "au111": (4.0, 30.0), "si111_7x7": (6.0, 20.0),
    "h_si100": (4.0, 12.0), "graphite": (2.0, 6.0), "molecular_islands": (8.0, 30.0),
    "step_bunches": (6.0, 20.0), "clusters": (8.0, 30.0), "lattice": (3.0, 20.0),
}


def make_sample(family: str, rng: np.random.Generator, size_m: float) -> Sample:
    """A new approach area of `family` (one of `FAMILIES`), side `size_m`.

    The default family is exactly `Sample.random` (same draws from `rng`), so a simulator
    given no family images what it always imaged.

    Raises
    ------
    ValueError
        For an unknown family.
    """
    if family == DEFAULT_FAMILY:
        return Sample.random(rng, size_m)
    if family not in _EVERY_MAKER:
        raise ValueError(f"unknown surface family {family!r}; known: {FAMILIES}, "
                         f"{tuple(RANDOMISED)} or {RANDOM_FAMILY!r}")
    steps, molecules, debris, texture = _EVERY_MAKER[family](rng, size_m)
    return FamilySample(size_m, steps, molecules, debris, rng.uniform(0, np.pi / 2),
                        family=family, texture=texture, lattice_m=0.0,
                        adsorbates=_adsorbates(rng, size_m, ADSORBATES_PER_NM2[family]))


def _adsorbates(rng: np.random.Generator, size_m: float,
                per_nm2: tuple[float, float]) -> Gaussians:
    """Point adsorbates and defects (80-200 pm, 0.3-0.5 nm wide) at a random coverage.

    Every real surface carries some; they are what a double tip doubles and a contaminated
    one images brighter or inverted, whatever the surface's own texture.
    """
    n = rng.poisson(rng.uniform(*per_nm2) * 1e18 * size_m * size_m)
    return Gaussians(rng.uniform(-size_m / 2, size_m / 2, (n, 2)),
                     rng.uniform(80e-12, 200e-12, n), rng.uniform(0.3e-9, 0.5e-9, n))
