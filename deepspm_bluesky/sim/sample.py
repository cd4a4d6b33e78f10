"""A procedural sample surface: terraces, step edges, adsorbed molecules and debris.

Heights are in metres and are evaluated on demand at arbitrary points, so a scan of any
size or resolution anywhere in an approach area costs only the pixels it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STEP_HEIGHT_M = 2.04e-10  # monatomic step of Ag(100)
MOLECULE_HEIGHT_M = 1.5e-10
MOLECULE_RADIUS_M = 0.6e-9
MOLECULES_PER_M2 = 0.03e18  # 0.03 per nm^2: a 10 nm frame holds about three
CLUSTERS_PER_M2 = 2e-5 * 1e18
CLUSTER_HEIGHT_M = 1.2e-9
CLUSTER_RADIUS_M = 2.0e-9


@dataclass
class Blobs:
    """Gaussian bumps (centres x, y in m, height m, radius m), looked up by a coarse grid."""

    xy: np.ndarray
    height: np.ndarray
    radius: np.ndarray

    @classmethod
    def empty(cls) -> Blobs:
        return cls(np.empty((0, 2)), np.empty(0), np.empty(0))

    def add(self, x: float, y: float, height: float, radius: float) -> None:
        self.xy = np.vstack([self.xy, [[x, y]]])
        self.height = np.append(self.height, height)
        self.radius = np.append(self.radius, radius)

    def near(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices of the blobs whose 3-sigma disc touches the box."""
        margin = 3 * self.radius
        x, y = self.xy[:, 0], self.xy[:, 1]
        inside = (x + margin > x0) & (x - margin < x1) & (y + margin > y0) & (y - margin < y1)
        return np.flatnonzero(inside)

    def heights(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """Sum of the blobs at the grid points (gx, gy: 1-D pixel coordinates in m)."""
        out = np.zeros((gy.size, gx.size))
        for i in self.near(gx[0], gx[-1], gy[0], gy[-1]):
            (cx, cy), h, r = self.xy[i], self.height[i], self.radius[i]
            out += h * np.outer(np.exp(-((gy - cy) ** 2) / (2 * r * r)),
                                np.exp(-((gx - cx) ** 2) / (2 * r * r)))
        return out


@dataclass
class Sample:
    """The surface of one approach area, centred on (0, 0), side `size_m`."""

    size_m: float
    step_normals: np.ndarray
    step_offsets_m: np.ndarray
    molecules: Blobs
    debris: Blobs = field(default_factory=Blobs.empty)

    @classmethod
    def random(cls, rng: np.random.Generator, size_m: float) -> Sample:
        """A new area: a few straight step edges, molecules and rare clusters."""
        n_steps = rng.integers(1, 5)
        angles = rng.uniform(0, np.pi, n_steps)
        normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        offsets = rng.uniform(-size_m / 2, size_m / 2, n_steps)
        area = size_m * size_m
        n_mol = rng.poisson(MOLECULES_PER_M2 * area)
        xy = rng.uniform(-size_m / 2, size_m / 2, (n_mol, 2))
        molecules = Blobs(xy, np.full(n_mol, MOLECULE_HEIGHT_M), np.full(n_mol, MOLECULE_RADIUS_M))
        n_cl = rng.poisson(CLUSTERS_PER_M2 * area)
        debris = Blobs(
            rng.uniform(-size_m / 2, size_m / 2, (n_cl, 2)),
            rng.uniform(0.5, 1.5, n_cl) * CLUSTER_HEIGHT_M,
            rng.uniform(0.5, 1.5, n_cl) * CLUSTER_RADIUS_M,
        )
        return cls(size_m, normals, offsets, molecules, debris)

    def heights(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """Topography at the grid (gx, gy) in metres, without the piezo's tilt and noise."""
        X, Y = np.meshgrid(gx, gy)
        steps = np.zeros_like(X)
        for (nx, ny), c in zip(self.step_normals, self.step_offsets_m, strict=True):
            steps += (nx * X + ny * Y > c) * STEP_HEIGHT_M
        return steps + self.molecules.heights(gx, gy) + self.debris.heights(gx, gy)
