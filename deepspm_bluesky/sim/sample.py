"""A procedural sample: Ag(100)-like terraces, MgPc-like molecules, clusters and debris.

Heights are in metres, evaluated on demand on any grid, so a scan of any size anywhere in an
approach area costs only the pixels it asks for. Everything is analytic: a tip of Gaussian
radius ``blur_m`` widens every Gaussian (sigma^2 + blur^2, volume kept), softens step edges
and damps the atomic lattice, so blunt-tip images need no convolution.

References
----------
Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3
(MgPc on Ag(100), imaged at 1 V / 25 pA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy.spatial import cKDTree

STEP_HEIGHT_M = 2.04e-10  # monatomic step of Ag(100)
STEP_WIDTH_M = 0.3e-9
LATTICE_M = 0.289e-9  # Ag(100) surface lattice constant
LATTICE_CORRUGATION_M = 3e-12
MOLECULES_PER_M2 = (0.02e18, 0.06e18)  # per area, uniform in this range (0.02-0.06 / nm^2)
LOBE_DISTANCE_M = 0.55e-9  # MgPc: four benzo lobes around the centre, ~1.4 nm across
LOBE_SIGMA_M = 0.2e-9
LOBE_HEIGHT_M = 1.4e-10
CENTRE_SIGMA_M = 0.25e-9
CENTRE_HEIGHT_M = 0.3e-10
LOBE_HEIGHTS = np.array([LOBE_HEIGHT_M] * 4 + [CENTRE_HEIGHT_M])
LOBE_SIGMAS = np.array([LOBE_SIGMA_M] * 4 + [CENTRE_SIGMA_M])
MOLECULE_MIN_DISTANCE_M = 1.5e-9
MOLECULE_ANGLES = np.deg2rad([22.5, -22.5])  # two mirror orientations on the square lattice
COARSE_PIXEL_M = 0.6e-9  # above this pixel size a molecule is drawn as one Gaussian
COARSE_SIGMA_M = 0.5e-9
COARSE_BLUR_M = 0.35e-9  # a tip blunter than this images a molecule as one round blob
BLOB_HEIGHT_M = 1.2e-10
MOLECULE_REACH_M = 4 * max(LOBE_SIGMA_M, COARSE_SIGMA_M) + LOBE_DISTANCE_M  # centre to edge
CLUSTERS_PER_M2 = 3e-5 * 1e18
CLUSTER_HEIGHT_M = (0.4e-9, 1.5e-9)
CLUSTER_SIGMA_M = (0.5e-9, 2.0e-9)
Bumps = tuple[np.ndarray, np.ndarray, np.ndarray]  # centres (k, 2), heights (k,), sigmas (k,)
CELL_M = 20e-9  # cells of the look-up of bumps near a frame: at most this wide, ...
POINTS_PER_CELL = 8  # ... and narrower where bumps are dense (graphite's adsorbates)
MAX_CELLS_PER_SIDE = 254  # (+ a cell at each end: at most 2^16 cells, sorted by radix)
GEMM_ONE_THREAD_SIZE = 160_000  # m * n * k below OpenBLAS's multi-threading threshold


def gaussian_image(xy: np.ndarray, height: np.ndarray, sigma: np.ndarray, gx: np.ndarray,
                   gy: np.ndarray, blur_m: float = 0.0, dtype: type = np.float64) -> np.ndarray:
    """Sum of isotropic Gaussians on the grid (gx, gy), seen through a tip of radius `blur_m`.

    Parameters
    ----------
    xy, height, sigma
        Centres (k, 2), peak heights (k,) and widths (k,) in metres.
    gx, gy
        1-D pixel coordinates in metres (columns, rows).
    blur_m
        Gaussian radius of the tip: widths add in quadrature and peaks drop by
        sigma / sqrt(sigma^2 + blur^2), so a line profile keeps its area. (A convolution
        keeps the volume and makes bumps under a blunt tip vanish; a true dilation keeps
        the height; real blunt tips sit between the two.)

    dtype
        Precision of the factors and their product (`Sample.dtype`).

    Returns
    -------
    (gy.size, gx.size) array: one matrix product of separable factors, no loop over bumps.
    """
    var = sigma**2 + blur_m**2
    nx = gx.size
    z = np.empty((len(var), nx + gy.size), dtype)
    np.subtract(gx, xy[:, 0:1], out=z[:, :nx])
    np.subtract(gy, xy[:, 1:2], out=z[:, nx:])
    z *= z
    z *= (-0.5 / var)[:, None]
    np.maximum(z, -40.0, out=z)  # far tails ~1e-18, never denormal (slow) floats
    np.exp(z, out=z)
    peaks = (height * sigma / np.sqrt(var)).astype(dtype, copy=False)
    return summed_outer(z[:, nx:] * peaks[:, None], z[:, :nx])


def summed_outer(ey: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """ey.T @ ex in blocks small enough for OpenBLAS to stay on one thread.

    A threaded GEMM of this shape is 100x slower on a busy machine (threads spin for cores
    that other processes hold), and one core is fast enough for it.
    """
    block = GEMM_ONE_THREAD_SIZE // (ey.shape[1] * ex.shape[1])
    if block < 8:  # a large image: threads pay off
        return ey.T @ ex
    out = np.zeros((ey.shape[1], ex.shape[1]))
    for start in range(0, len(ey), block):
        out += ey[start:start + block].T @ ex[start:start + block]
    return out


class _CellIndex:
    """Discs (centres, radii) binned by centre in square cells (at least the largest
    radius, the reach; `CELL_M`, or less where `POINTS_PER_CELL` fill a smaller one): the
    discs that may touch a box are those of the cells the box, grown by the reach, covers;
    their bounding boxes, kept as (4, n) rows [x + r, -(x - r), y + r, -(y - r)], then
    decide with one comparison."""

    def __init__(self, xy: np.ndarray, radius_m: np.ndarray) -> None:
        x, y = np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1])
        self.reach = float(radius_m.max(initial=0.0))
        extent = (float(np.ptp(x)), float(np.ptp(y))) if len(x) else (0.0, 0.0)
        dense = math.sqrt(POINTS_PER_CELL * extent[0] * extent[1] / max(len(x), 1))
        # at most MAX_CELLS_PER_SIDE cells along a side, however the points lie
        self.cell = max(min(CELL_M, dense), self.reach, max(extent) / MAX_CELLS_PER_SIDE, 1e-12)
        self.bounds = np.stack([x + radius_m, -(x - radius_m), y + radius_m, -(y - radius_m)])
        i, j = (np.floor(c / self.cell).astype(np.int64) for c in (x, y))
        lo = [int(c.min(initial=0)) for c in (i, j)]
        shape = [int(c.max(initial=0)) - low + 1 for c, low in zip((i, j), lo, strict=True)]
        key = (j - lo[1]) * shape[0] + (i - lo[0])
        if shape[0] * shape[1] <= 1 << 16:  # numpy sorts 16-bit keys by radix: O(n)
            key = key.astype(np.uint16)
        self.order = np.argsort(key, kind="stable")
        counts = np.bincount(key, minlength=shape[0] * shape[1])
        # plain ints: a frame's look-up is a few scalar steps, cheaper in Python than numpy
        self.starts = [0, *np.cumsum(counts).tolist()]
        self.lo, self.shape = lo, shape

    def candidates(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices (ascending) of the points in the cells the box covers, grown by the reach."""
        r, cell, (lo_i, lo_j), (n_i, n_j) = self.reach, self.cell, self.lo, self.shape
        i0 = max(math.floor((x0 - r) / cell) - lo_i, 0)
        i1 = min(math.floor((x1 + r) / cell) - lo_i, n_i - 1)
        j0 = max(math.floor((y0 - r) / cell) - lo_j, 0)
        j1 = min(math.floor((y1 + r) / cell) - lo_j, n_j - 1)
        if i0 > i1 or j0 > j1:
            return np.empty(0, np.int64)
        starts = self.starts
        if j0 == j1 and i0 == i1:  # one cell: its points are in ascending order already
            return self.order[starts[j0 * n_i + i0]:starts[j0 * n_i + i0 + 1]]
        merged = np.concatenate([self.order[starts[j * n_i + i0]:starts[j * n_i + i1 + 1]]
                                 for j in range(j0, j1 + 1)])
        merged.sort()
        return merged

    def touching(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices (ascending) of the discs that reach into the box (strictly)."""
        candidates = self.candidates(x0, x1, y0, y1)
        if candidates.size == 0:
            return candidates
        box = np.array([[x0], [-x1], [y0], [-y1]])
        return candidates[np.logical_and.reduce(self.bounds.take(candidates, axis=1) > box)]


@dataclass
class Gaussians:
    """A growing list of Gaussian bumps (clusters, debris, craters with negative height)."""

    xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    height: np.ndarray = field(default_factory=lambda: np.empty(0))
    sigma: np.ndarray = field(default_factory=lambda: np.empty(0))

    _cells: _CellIndex | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, xy: np.ndarray, height: np.ndarray, sigma: np.ndarray) -> None:
        """Append bumps: centres (k, 2), heights (k,) and widths (k,) in metres."""
        self.xy = np.vstack([self.xy, np.reshape(xy, (-1, 2))])
        self.height = np.append(self.height, height)
        self.sigma = np.append(self.sigma, sigma)
        self._cells = None

    def near(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices (ascending) of the bumps whose 4-sigma disc touches the box.

        The bumps are looked up in square cells (kept until the next `add`), so a frame
        costs the bumps near it, not all of the area's.
        """
        if self._cells is None:
            self._cells = _CellIndex(self.xy, 4 * self.sigma)
        return self._cells.touching(x0, x1, y0, y1)

    def bumps(self, x0: float, x1: float, y0: float, y1: float) -> Bumps:
        """(xy, height, sigma) of the bumps that reach into the box."""
        keep = self.near(x0, x1, y0, y1)
        return self.xy.take(keep, axis=0), self.height.take(keep), self.sigma.take(keep)


@dataclass
class Molecules:
    """Four-lobed, MgPc-like adsorbates; centres kept sorted by x for fast look-up.

    Each molecule is five Gaussians (four lobes and a dim centre), precomputed in `lobes_xy`.
    """

    xy: np.ndarray
    angle: np.ndarray
    lobes_xy: np.ndarray = field(init=False, repr=False)
    lobes_height: np.ndarray = field(init=False, repr=False)
    lobes_sigma: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        phi = self.angle[:, None] + np.arange(4) * np.pi / 2
        lobes = self.xy[:, None, :] + LOBE_DISTANCE_M * np.stack([np.cos(phi), np.sin(phi)], -1)
        self.lobes_xy = np.concatenate([lobes, self.xy[:, None, :]], axis=1).reshape(-1, 2)
        self.lobes_height = np.tile(LOBE_HEIGHTS, len(self.xy))
        self.lobes_sigma = np.tile(LOBE_SIGMAS, len(self.xy))

    @classmethod
    def random(cls, rng: np.random.Generator, size_m: float, per_m2: float) -> Molecules:
        n = rng.poisson(per_m2 * size_m * size_m)
        xy = rng.uniform(-size_m / 2, size_m / 2, (n, 2))
        angle = rng.choice(MOLECULE_ANGLES, n) + rng.normal(0, np.deg2rad(3), n)
        pairs = cKDTree(xy).query_pairs(MOLECULE_MIN_DISTANCE_M, output_type="ndarray")
        keep = np.ones(n, bool)
        keep[pairs[:, 1]] = False  # molecules do not overlap
        xy, angle = xy[keep], angle[keep]
        order = np.argsort(xy[:, 0])
        return cls(xy[order], angle[order])

    def near(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices of the molecules whose centre lies within the box."""
        lo, hi = np.searchsorted(self.xy[:, 0], [x0, x1])
        y = self.xy[lo:hi, 1]
        return lo + np.flatnonzero((y > y0) & (y < y1))

    def bumps(self, x0: float, x1: float, y0: float, y1: float, *, pixel_m: float,
              blur_m: float = 0.0, centre_gain: float = 1.0) -> Bumps:
        """(xy, height, sigma) of the molecules in the box.

        Five Gaussians per molecule (the centre's height times `centre_gain`), or one round
        blob each where the pixels or the tip are too coarse to resolve the lobes.
        """
        if len(self.xy) == 0:  # a surface without molecules (most families)
            return np.empty((0, 2)), np.empty(0), np.empty(0)
        m = MOLECULE_REACH_M
        idx = self.near(x0 - m, x1 + m, y0 - m, y1 + m)
        if pixel_m > COARSE_PIXEL_M or blur_m > COARSE_BLUR_M:
            n = idx.size
            return self.xy[idx], np.full(n, BLOB_HEIGHT_M), np.full(n, COARSE_SIGMA_M)
        lobes = (idx[:, None] * 5 + np.arange(5)).ravel()
        height = self.lobes_height[lobes]
        if centre_gain != 1.0:
            height = height * np.tile([1, 1, 1, 1, centre_gain], idx.size)
        return self.lobes_xy[lobes], height, self.lobes_sigma[lobes]


@dataclass
class Steps:
    """Meandering monatomic step edges; each raises (or lowers) the terrace on its far side."""

    normals: np.ndarray
    offsets_m: np.ndarray
    signs: np.ndarray
    meander_m: np.ndarray
    wavenumber: np.ndarray
    phase: np.ndarray
    height_m: float = STEP_HEIGHT_M

    @classmethod
    def random(cls, rng: np.random.Generator, size_m: float) -> Steps:
        n = int(rng.integers(0, 5))
        angles = rng.uniform(0, np.pi, n)
        return cls(
            normals=np.stack([np.cos(angles), np.sin(angles)], axis=1),
            offsets_m=rng.uniform(-size_m / 2, size_m / 2, n),
            signs=rng.choice([-1.0, 1.0], n),
            meander_m=rng.uniform(0, 15e-9, n),
            wavenumber=2 * np.pi / rng.uniform(50e-9, 400e-9, n),
            phase=rng.uniform(0, 2 * np.pi, n),
        )

    def near(self, x0: float, x1: float, y0: float, y1: float,
             blur_m: float = 0.0) -> tuple[np.ndarray, float]:
        """Mask of the edges that pass through the box, and the constant level of the others."""
        width = np.hypot(STEP_WIDTH_M, blur_m)
        centre = np.array([x0 + x1, y0 + y1]) / 2
        reach = np.hypot(x1 - x0, y1 - y0) / 2 + self.meander_m + 8 * width
        d_centre = self.normals @ centre - self.offsets_m
        far = np.abs(d_centre) > reach
        level = float(np.sum(self.signs[far] * np.sign(d_centre[far]))) * self.height_m / 2
        return ~far, level

    def image(self, gx: np.ndarray, gy: np.ndarray, blur_m: float = 0.0,
              dtype: type = np.float64) -> np.ndarray:
        """Terrace heights on the grid, edges smoothed over sqrt(width^2 + blur^2); the
        edges' meander and profile computed in `dtype` (`Sample.dtype`).

        Edges that pass far from the frame add a constant; the near ones are evaluated
        together: each edge's signed distance d = across - offset - meander(along) is a sum
        of separable terms (sin(a + b) = sin a cos b + cos a sin b), so all of them come from
        one batched product of (rows, 4) and (4, columns) factors, then one tanh.
        """
        width = np.hypot(STEP_WIDTH_M, blur_m)
        near, level = self.near(gx[0], gx[-1], gy[0], gy[-1], blur_m)
        out = np.full((gy.size, gx.size), level)
        idx = np.flatnonzero(near)
        if idx.size == 0:
            return out
        nx, ny = self.normals[idx, 0, None], self.normals[idx, 1, None]
        k, meander = self.wavenumber[idx, None], self.meander_m[idx, None]
        cos_p, sin_p = cos_sin(k * nx * gy + self.phase[idx, None], dtype)  # k along
        cos_q, sin_q = cos_sin(-k * ny * gx, dtype)  # + phase = p(y) + q(x)
        rows = np.stack([ny * gy - self.offsets_m[idx, None], -meander * sin_p,
                         -meander * cos_p, np.ones_like(cos_p)], axis=2)
        cols = np.stack([np.ones_like(cos_q), cos_q, sin_q, nx * gx], axis=1)
        d = np.matmul(rows, cols)
        d *= 1.0 / width
        edges = _tanh(d.astype(dtype, copy=False))
        out += np.tensordot((self.signs[idx] * (self.height_m / 2)).astype(dtype), edges,
                            axes=1)
        return out


def cos_sin(phase: np.ndarray, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of `phase`; in float32 (`dtype`) after a reduction to one turn in
    float64: numpy's float32 sine and cosine are vectorised, its float64 ones are not (7x
    slower here), and the reduced phase loses nothing (the result is within 2e-7)."""
    if dtype == np.float64:
        return np.cos(phase), np.sin(phase)
    turns = phase / (2 * np.pi)
    turns -= np.rint(turns)
    reduced = (2 * np.pi * turns).astype(dtype)
    return np.cos(reduced), np.sin(reduced)


def _tanh(x: np.ndarray) -> np.ndarray:
    """tanh of `x`, written into `x`, through one exp (within an ulp of np.tanh, twice as
    fast on this numpy; two temporaries, not seven: a frame's batch of edges is large)."""
    e = np.abs(x)
    e *= -2.0
    np.exp(e, out=e)
    ratio = np.subtract(1.0, e)
    e += 1.0
    ratio /= e
    return np.copysign(ratio, x, out=x)


@dataclass
class Sample:
    """The surface of one approach area, centred on (0, 0), side `size_m`.

    Parameters
    ----------
    size_m
        Side of the area the fine piezo reaches.
    steps, molecules
        Terraces and adsorbed molecules.
    debris
        Clusters, and whatever the tip leaves behind (dips, crashes, pulses).
    lattice_angle
        Orientation of the atomic lattice in radians.
    lattice_m
        Constant of the square atomic lattice (Ag(100)); 0 draws none.

    Attributes
    ----------
    dtype
        Precision of the step edges and Gaussians of a frame: float64 here (the images the
        shipped classifier and agent were trained on, bit for bit); the families
        (`sim.families`) use float32, which rounds heights by ~1e-16 m and is twice as fast.
    """

    dtype: ClassVar[type] = np.float64

    size_m: float
    steps: Steps
    molecules: Molecules
    debris: Gaussians = field(default_factory=Gaussians)
    lattice_angle: float = 0.0
    lattice_m: float = LATTICE_M

    @classmethod
    def random(cls, rng: np.random.Generator, size_m: float) -> Sample:
        """A new area: a few step edges, a random coverage of molecules, rare clusters."""
        steps = Steps.random(rng, size_m)
        molecules = Molecules.random(rng, size_m, rng.uniform(*MOLECULES_PER_M2))
        debris = Gaussians()
        n_clusters = rng.poisson(CLUSTERS_PER_M2 * size_m * size_m)
        for centre in rng.uniform(-size_m / 2, size_m / 2, (n_clusters, 2)):
            debris.add(*cluster(rng, centre, rng.uniform(*CLUSTER_HEIGHT_M)))
        return cls(size_m, steps, molecules, debris, rng.uniform(0, np.pi / 2))

    def heights(self, gx: np.ndarray, gy: np.ndarray, *, blur_m: float = 0.0,
                adsorbate_gain: float = 1.0, centre_gain: float = 1.0,
                bias_v: float = 1.0, extra_bumps: Bumps | None = None) -> np.ndarray:
        """Topography at the grid (gx, gy) in metres, without the piezo's tilt and noise.

        Parameters
        ----------
        gx, gy
            1-D, evenly spaced pixel coordinates in metres (columns, rows).
        blur_m
            Gaussian radius of the tip.
        adsorbate_gain
            Factor on the apparent height of molecules (tip contrast; negative inverts).
        centre_gain
            Factor on the height of a molecule's centre (a tip that picked something up can
            image the metal centre brightly).
        bias_v
            Imaging bias (the families of `sim.families` that image the two polarities
            differently use it; Ag(100)/MgPc's polarity is in `adsorbate_gain`).
        extra_bumps
            More Gaussians (xy, height, sigma), drawn in the same matrix product as the
            molecules and debris (a subclass's adatoms or adsorbates).
        """
        out = self.steps.image(gx, gy, blur_m, self.dtype)
        out += self._lattice(gx, gy, blur_m)
        box = (gx[0] - 4 * blur_m, gx[-1] + 4 * blur_m, gy[0] - 4 * blur_m, gy[-1] + 4 * blur_m)
        pixel = abs(gx[-1] - gx[0]) / max(gx.size - 1, 1)
        mxy, mh, ms = self.molecules.bumps(*box, pixel_m=pixel, blur_m=blur_m,
                                           centre_gain=centre_gain)
        parts = [self.debris.bumps(*box)]
        if len(mh):
            parts.insert(0, (mxy, adsorbate_gain * mh, ms))
        if extra_bumps is not None:
            parts.append(extra_bumps)
        xy, height, sigma = (np.concatenate(p) for p in zip(*parts, strict=True))
        out += gaussian_image(xy, height, sigma, gx, gy, blur_m, self.dtype)
        return out

    def relief_bound_m(self, x0: float, x1: float, y0: float, y1: float, *,
                       adsorbate_gain: float = 1.0, centre_gain: float = 1.0,
                       bias_v: float = 1.0) -> float:
        """An upper bound of max - min of the topography in the box (cheap, no grid).

        A tip protrusion retracted by more than this cannot touch anything in the box.
        """
        near_steps, _ = self.steps.near(x0, x1, y0, y1)
        _, debris_height, _ = self.debris.bumps(x0, x1, y0, y1)
        m = MOLECULE_REACH_M
        molecules = self.molecules.near(x0 - m, x1 + m, y0 - m, y1 + m).size > 0
        return (self.steps.height_m * np.count_nonzero(near_steps) + 2 * LATTICE_CORRUGATION_M
                + molecules * 2 * (LOBE_HEIGHT_M + CENTRE_HEIGHT_M * abs(centre_gain))
                * abs(adsorbate_gain)
                + float(np.sum(np.abs(debris_height))))

    def _lattice(self, gx: np.ndarray, gy: np.ndarray, blur_m: float) -> np.ndarray:
        """Square atomic corrugation, only where pixels resolve it (no aliasing)."""
        pixel = abs(gx[-1] - gx[0]) / max(gx.size - 1, 1)
        if self.lattice_m <= 0:
            return 0.0
        k = 2 * np.pi / self.lattice_m
        amplitude = LATTICE_CORRUGATION_M * np.exp(-((k * blur_m) ** 2) / 2)
        if pixel > self.lattice_m / 3 or amplitude < 1e-13:
            return 0.0
        c, s = np.cos(self.lattice_angle), np.sin(self.lattice_angle)
        out = 0.0
        for ux, uy in ((c, s), (-s, c)):  # cos(k u.r) = cos(k ux x) cos(k uy y) - sin sin
            out = out + (np.outer(np.cos(k * uy * gy), np.cos(k * ux * gx))
                         - np.outer(np.sin(k * uy * gy), np.sin(k * ux * gx)))
        return amplitude / 2 * out

    def add_dip_mark(self, rng: np.random.Generator, x_m: float, y_m: float,
                     dip_m: float) -> None:
        """A crater where the tip went in and a rim of tip material piled up around it."""
        depth = abs(dip_m)
        crater_sigma = 0.5e-9 + 0.3 * depth
        self.debris.add([x_m, y_m], -0.15 * depth, crater_sigma)
        n = int(rng.integers(4, 9))
        phi = rng.uniform(0, 2 * np.pi, n)
        r = 1.5 * crater_sigma * rng.uniform(0.8, 1.2, n)
        xy = np.stack([x_m + r * np.cos(phi), y_m + r * np.sin(phi)], 1)
        self.debris.add(xy, (0.4e-9 + 0.25 * depth) * rng.uniform(0.8, 1.3, n),
                        rng.uniform(0.4, 0.8, n) * crater_sigma)

    def add_cluster(self, rng: np.random.Generator, x_m: float, y_m: float,
                    height_m: float) -> None:
        """Deposit an irregular cluster (tip material) centred at (x, y)."""
        self.debris.add(*cluster(rng, np.array([x_m, y_m]), height_m))


def cluster(rng: np.random.Generator, centre: np.ndarray, height_m: float) -> Bumps:
    """An irregular cluster: 3-7 Gaussians scattered around `centre`."""
    n = int(rng.integers(3, 8))
    sigma = rng.uniform(*CLUSTER_SIGMA_M, n) / 2
    xy = centre + rng.normal(0, 1, (n, 2)) * sigma[:, None]
    return xy, height_m * rng.uniform(0.5, 1.0, n), sigma
