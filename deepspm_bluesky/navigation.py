"""Where to scan next: DeepSPM's approach-area grid with forbidden discs.

Constants from Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3.
"""

from __future__ import annotations

import numpy as np


class Navigator:
    """A grid of `cell_nm` cells over one approach area of side `area_nm`, centred on (0, 0).

    A cell is free until a forbidden disc covers its centre. The next location is the free
    cell minimising ``spiral_reg * chebyshev(cell, centre) + euclid(cell, position)`` among
    those within `max_move_nm` of the current position.
    """

    def __init__(self, area_nm: float, *, cell_nm: float = 10.0, margin_nm: float = 0.0,
                 max_move_nm: float = 500.0, spiral_reg: float = 1.0) -> None:
        n = int((area_nm - 2 * margin_nm) // cell_nm)
        if n < 1:
            raise ValueError(f"approach area {area_nm} nm holds no cell of {cell_nm} nm")
        self.area_nm, self.cell_nm, self.max_move_nm = area_nm, cell_nm, max_move_nm
        self.spiral_reg = spiral_reg
        centres = (np.arange(n) - (n - 1) / 2) * cell_nm
        self.cx, self.cy = np.meshgrid(centres, centres)
        self.free = np.ones((n, n), bool)
        self.position = (0.0, 0.0)

    def forbid(self, x_nm: float, y_nm: float, radius_nm: float) -> None:
        """Mark every cell whose centre lies within `radius_nm` of (x, y) as used."""
        self.free &= np.hypot(self.cx - x_nm, self.cy - y_nm) > radius_nm

    def next_location(self) -> tuple[float, float] | None:
        """Centre of the best free cell in reach, or None when the area is exhausted."""
        px, py = self.position
        dist = np.hypot(self.cx - px, self.cy - py)
        cost = self.spiral_reg * np.maximum(abs(self.cx), abs(self.cy)) + dist
        cost[~self.free | (dist > self.max_move_nm)] = np.inf
        best = np.unravel_index(np.argmin(cost), cost.shape)
        if not np.isfinite(cost[best]):
            return None
        return float(self.cx[best]), float(self.cy[best])

    def move_to(self, x_nm: float, y_nm: float) -> None:
        self.position = (float(x_nm), float(y_nm))

    def new_area(self) -> None:
        """Forget the mask after a coarse move to a fresh approach area."""
        self.free[:] = True
        self.position = (0.0, 0.0)
