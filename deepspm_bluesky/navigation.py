"""Where to scan next: DeepSPM's approach-area grid with forbidden discs, saved to disk.

Constants from Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3.

Examples
--------
>>> nav = Navigator(850.0)
>>> nav.next_location()
(0.0, 0.0)
>>> nav.forbid(0.0, 0.0, 50.0)
>>> nav.next_location()
(-40.0, -30.0)
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

CELL_NM = 10.0
MAX_MOVE_NM = 500.0
SPIRAL_REG = 1.0
DEBRIS_RADIUS_NM = 50.0  # forbidden radius of "stall", scaled on repeated debris
MAX_DEBRIS_TRIES = 250  # after this many debris images in a row the reference takes the image
CRASH_RADIUS_NM = 150.0  # area the reference forbids around a heavy tip clean
STATE_FORMAT = "deepspm-bluesky navigation"
STATE_VERSION = 1
_GEOMETRY = ("area_nm", "cell_nm", "margin_nm")


def debris_radius_nm(count: int, *, base_radius_nm: float = DEBRIS_RADIUS_NM) -> float:
    """Forbidden radius around the `count`-th debris image in a row: ``base * 0.5 * sqrt(n)``.

    Parameters
    ----------
    count
        Number of consecutive debris images so far, including this one (>= 1).
    base_radius_nm
        Radius of the base action (the reference uses "stall", 50 nm).

    Returns
    -------
    float
        25 nm for the first, 35.4 nm for the second, 50 nm for the fourth, ... (base 50 nm).
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"debris count must be an integer >= 1, got {count!r}")
    _check_number("base_radius_nm", base_radius_nm, minimum=0.0)
    return base_radius_nm * 0.5 * math.sqrt(count)


def _check_number(name: str, value: float, *, minimum: float, strict: bool = False) -> float:
    """`value` as a float, or a ValueError naming `name` when not finite or too small."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {bound} {minimum}, got {value}")
    return value


class Navigator:
    """The cell grid of one approach area, its forbidden discs and the tip's position.

    Cells of side `cell_nm` are centred on ``(i * cell_nm, j * cell_nm)`` for integer
    ``|i|, |j| <= (area_nm / 2 - margin_nm) // cell_nm``, so (0, 0), the centre of the area,
    is a cell. A cell is free until a forbidden disc covers its centre. The next location is
    the free cell minimising ``spiral_reg * chebyshev(cell, centre) + euclid(cell, position)``
    among those within `max_move_nm` of the current position (ties go to the smallest x,
    then y, as in the reference); none left means the area is exhausted.

    Parameters
    ----------
    area_nm
        Side of the approach area (the fine piezo range, 850 nm on the reference setup).
    cell_nm
        Side of a grid cell.
    margin_nm
        Safety margin kept clear along the edges of the area.
    max_move_nm
        Longest move to the next location.
    spiral_reg
        Weight of the distance from the centre: larger values spiral outwards more tightly.
    state_path
        File the state is saved to after every change (see `save`); None saves nothing.

    Attributes
    ----------
    free
        Boolean mask of the free cells, indexed ``[y, x]`` (rows are y, as in an image).
    x_nm
        Cell centres along either axis, ascending.
    position
        Current tip position (x, y) in nm.
    area_index
        Number of times `new_area` was called.
    debris_count
        Debris images in a row (see `mark_debris`).

    Examples
    --------
    >>> nav = Navigator(100.0, cell_nm=10.0, max_move_nm=30.0)
    >>> nav.free.shape
    (11, 11)
    """

    def __init__(self, area_nm: float, *, cell_nm: float = CELL_NM, margin_nm: float = 0.0,
                 max_move_nm: float = MAX_MOVE_NM, spiral_reg: float = SPIRAL_REG,
                 state_path: str | os.PathLike | None = None) -> None:
        self.area_nm = _check_number("area_nm", area_nm, minimum=0.0, strict=True)
        self.cell_nm = _check_number("cell_nm", cell_nm, minimum=0.0, strict=True)
        self.margin_nm = _check_number("margin_nm", margin_nm, minimum=0.0)
        self.max_move_nm = _check_number("max_move_nm", max_move_nm, minimum=0.0)
        self.spiral_reg = _check_number("spiral_reg", spiral_reg, minimum=0.0)
        reach = self.area_nm / 2 - self.margin_nm
        if reach < 0:
            raise ValueError(f"margin {margin_nm} nm leaves nothing of an approach area of "
                             f"{area_nm} nm")
        self.half_cells = int(reach // self.cell_nm)
        index = np.arange(-self.half_cells, self.half_cells + 1, dtype=np.float64)
        self._index_x, self._index_y = index[None, :], index[:, None]
        self.x_nm = index * self.cell_nm
        self.cx, self.cy = np.meshgrid(self.x_nm, self.x_nm)
        self._chebyshev = np.maximum(np.abs(self._index_x), np.abs(self._index_y))
        self.free = np.ones((index.size, index.size), bool)
        self.position = (0.0, 0.0)
        self.area_index = 0
        self.debris_count = 0
        self.state_path = Path(state_path) if state_path is not None else None

    def __repr__(self) -> str:
        return (f"Navigator(area_nm={self.area_nm}, cell_nm={self.cell_nm}, "
                f"free={int(self.free.sum())}/{self.free.size}, position={self.position})")

    # -- the mask -------------------------------------------------------------------------
    def _distance_cells(self, x_nm: float, y_nm: float) -> np.ndarray:
        """Euclidean distance of every cell centre from (x, y), in cells, indexed [y, x]."""
        x, y = x_nm / self.cell_nm, y_nm / self.cell_nm
        return np.sqrt((self._index_x - x) ** 2 + (self._index_y - y) ** 2)

    def forbid(self, x_nm: float, y_nm: float, radius_nm: float) -> None:
        """Mark every cell whose centre lies closer than `radius_nm` to (x, y) as used.

        Parameters
        ----------
        x_nm, y_nm
            Centre of the disc (where the action or scan happened).
        radius_nm
            Radius of the disc, from the action table (0 forbids nothing).
        """
        x_nm = _check_number("x_nm", x_nm, minimum=-math.inf)
        y_nm = _check_number("y_nm", y_nm, minimum=-math.inf)
        radius = _check_number("radius_nm", radius_nm, minimum=0.0) / self.cell_nm
        self.free &= self._distance_cells(x_nm, y_nm) >= radius
        self._autosave()

    def mark_debris(self, x_nm: float | None = None, y_nm: float | None = None, *,
                    base_radius_nm: float = DEBRIS_RADIUS_NM) -> float:
        """Count one more debris image in a row and forbid a disc growing with the count.

        Parameters
        ----------
        x_nm, y_nm
            Where the debris was seen; the current position by default.
        base_radius_nm
            Radius the growth applies to (50 nm, the "stall" radius of the reference).

        Returns
        -------
        float
            The radius forbidden, ``debris_radius_nm(debris_count)``.
        """
        x_nm = self.position[0] if x_nm is None else x_nm
        y_nm = self.position[1] if y_nm is None else y_nm
        radius = debris_radius_nm(self.debris_count + 1, base_radius_nm=base_radius_nm)
        self.debris_count += 1
        self.forbid(x_nm, y_nm, radius)
        return radius

    def clear_debris(self) -> None:
        """A clean image: the next debris image starts the count again."""
        self.debris_count = 0
        self._autosave()

    @property
    def debris_limit_reached(self) -> bool:
        """True after `MAX_DEBRIS_TRIES` debris images in a row (the reference gives up)."""
        return self.debris_count >= MAX_DEBRIS_TRIES

    # -- moving ---------------------------------------------------------------------------
    def next_location(self) -> tuple[float, float] | None:
        """Centre (x, y) in nm of the best free cell in reach, or None when exhausted."""
        px, py = self.position
        dist = self._distance_cells(px, py)
        cost = self.spiral_reg * self._chebyshev + dist
        cost[~self.free | (dist > self.max_move_nm / self.cell_nm)] = np.inf
        best = int(np.argmin(cost.T))  # x-major order: ties go to the smallest x, then y
        ix, iy = divmod(best, cost.shape[0])
        if not np.isfinite(cost[iy, ix]):
            return None
        return float(self.x_nm[ix]), float(self.x_nm[iy])

    @property
    def exhausted(self) -> bool:
        """True when no free cell is within reach: time for a new approach area."""
        return self.next_location() is None

    def move_to(self, x_nm: float, y_nm: float) -> None:
        """Record that the tip is now at (x, y) nm (within the approach area)."""
        half = self.area_nm / 2
        x_nm = _check_number("x_nm", x_nm, minimum=-math.inf)
        y_nm = _check_number("y_nm", y_nm, minimum=-math.inf)
        if abs(x_nm) > half or abs(y_nm) > half:
            raise ValueError(f"position ({x_nm}, {y_nm}) nm is outside the approach area "
                             f"of +-{half} nm")
        self.position = (x_nm, y_nm)
        self._autosave()

    def new_area(self) -> None:
        """Start afresh after a coarse move: all cells free, tip at the centre, no debris."""
        self.free[:] = True
        self.position = (0.0, 0.0)
        self.debris_count = 0
        self.area_index += 1
        self._autosave()

    @property
    def free_fraction(self) -> float:
        """Fraction of the cells still free."""
        return float(self.free.mean())

    # -- state on disk --------------------------------------------------------------------
    def _settings(self) -> dict:
        return {"area_nm": self.area_nm, "cell_nm": self.cell_nm, "margin_nm": self.margin_nm,
                "max_move_nm": self.max_move_nm, "spiral_reg": self.spiral_reg}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the mask, position and counters to `path` (an ``.npz`` file), atomically.

        Parameters
        ----------
        path
            Target file; `state_path` by default.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        if path is None:
            if self.state_path is None:
                raise ValueError("no path given and this navigator has no state_path")
            path = self.state_path
        path = Path(path)
        meta = {"format": STATE_FORMAT, "version": STATE_VERSION, **self._settings(),
                "position": list(self.position), "area_index": self.area_index,
                "debris_count": self.debris_count}
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as fh:
            np.savez(fh, free=self.free, meta=np.array(json.dumps(meta)))
        os.replace(partial, path)
        return path

    def _autosave(self) -> None:
        if self.state_path is not None:
            self.save(self.state_path)

    @classmethod
    def load(cls, path: str | os.PathLike, *,
             state_path: str | os.PathLike | None = None) -> Navigator:
        """A navigator exactly as `save` left it (geometry, settings, mask, counters)."""
        meta, free = _read_state(Path(path))
        nav = cls(**{key: meta[key] for key in cls._setting_keys()}, state_path=state_path)
        nav._take_state(Path(path), meta, free)
        return nav

    def restore(self, path: str | os.PathLike) -> None:
        """Load the mask, position and counters saved for this same approach-area grid.

        Raises
        ------
        ValueError
            If the file is corrupt, or was saved for a different area, cell or margin.
        """
        path = Path(path)
        meta, free = _read_state(path)
        mismatched = [f"{key}: file {meta[key]}, here {getattr(self, key)}"
                      for key in _GEOMETRY if not math.isclose(meta[key], getattr(self, key))]
        if mismatched:
            raise ValueError(f"navigation state {path} is for another grid ("
                             + "; ".join(mismatched) + ")")
        self._take_state(path, meta, free)
        self._autosave()

    @classmethod
    def resume(cls, path: str | os.PathLike, area_nm: float, **options) -> Navigator:
        """The navigator saved at `path` if there is one (same grid), else a fresh one.

        Either way it saves itself to `path` after every change, so a survey stopped at
        any point continues where it stopped.
        """
        nav = cls(area_nm, state_path=path, **options)
        if Path(path).exists():
            nav.restore(path)
        return nav

    @staticmethod
    def _setting_keys() -> tuple[str, ...]:
        return ("area_nm", "cell_nm", "margin_nm", "max_move_nm", "spiral_reg")

    def _take_state(self, path: Path, meta: dict, free: np.ndarray) -> None:
        if free.shape != self.free.shape:
            raise ValueError(f"navigation state {path}: mask of shape {free.shape} does not fit "
                             f"a grid of {self.free.shape} cells")
        x, y = meta["position"]
        try:
            self.move_to(x, y)
        except ValueError as err:
            raise ValueError(f"navigation state {path}: {err}") from None
        self.free[:] = free
        self.area_index = meta["area_index"]
        self.debris_count = meta["debris_count"]


def _read_state(path: Path) -> tuple[dict, np.ndarray]:
    """Metadata and mask of a saved state, or an error naming the file and the problem."""
    if not path.is_file():
        raise FileNotFoundError(f"navigation state {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            free = np.array(data["free"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"navigation state {path} is corrupt or not a navigation state "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise ValueError(f"navigation state {path} is not a {STATE_FORMAT} file")
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"navigation state {path} has version {meta.get('version')!r}; "
                         f"this code reads version {STATE_VERSION}")
    numbers = (*Navigator._setting_keys(), "area_index", "debris_count")
    bad = [key for key in numbers if not isinstance(meta.get(key), (int, float))
           or isinstance(meta.get(key), bool)]
    position = meta.get("position")
    if not (isinstance(position, list) and len(position) == 2
            and all(isinstance(v, (int, float)) for v in position)):
        bad.append("position")
    if bad:
        raise ValueError(f"navigation state {path} has missing or invalid {bad}")
    if free.dtype != bool or free.ndim != 2:
        raise ValueError(f"navigation state {path}: mask must be a 2-D boolean array, got "
                         f"{free.dtype} with shape {free.shape}")
    return meta, free
