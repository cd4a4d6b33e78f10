"""A survey at a glance: every image levelled, in a grid, titled with its verdict (PNG).

Drawn with matplotlib's object API on the Agg canvas (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from .imaging import flatten_plane

VERDICT_COLOURS = {"good": "tab:green", "bad": "tab:red"}  # a failed check: grey
COLUMNS = 8


def draw_contact_sheet(dataset: xr.Dataset, path: str | Path, *, columns: int = COLUMNS,
                       dpi: int = 80) -> Path:
    """Draw every image of `dataset` (`deepspm_bluesky.data.survey_dataset`) into a PNG.

    Each panel is the image with its robust plane removed (`imaging.flatten_plane`), in
    picometres, on the frame's own extent (nm), titled with its number, verdict and P(good).

    Returns
    -------
    Path
        The file written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = dataset.sizes["image"]
    if count == 0:
        raise ValueError("the survey has no images to draw")
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(max(1.9 * columns, 4.5), 2.1 * rows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    half_nm = dataset.attrs["frame_size_m"] / 2 * 1e9
    for ax, index in zip(axes, range(count), strict=False):
        frame = dataset.isel(image=index)
        ax.imshow(_levelled(frame["height"].to_numpy()) * 1e12, cmap="afmhot", origin="lower",
                  extent=(-half_nm, half_nm, -half_nm, half_nm))
        verdict = str(frame["verdict"].item()) if "verdict" in frame else "unjudged"
        p_good = float(frame["p_good"]) if "p_good" in frame else math.nan
        label = f"{index}: {verdict}" + ("" if math.isnan(p_good) else f" {p_good:.2f}")
        ax.set_title(label, fontsize=9, color=VERDICT_COLOURS.get(verdict, "dimgrey"))
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[count:]:
        ax.set_axis_off()
    fig.suptitle(_heading(dataset), fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def _levelled(heights: np.ndarray) -> np.ndarray:
    """Heights above the robust plane; an image that cannot be levelled (NaN) as it is."""
    try:
        return flatten_plane(heights)
    except ValueError:
        return np.nan_to_num(heights - np.nanmean(heights))


def _heading(dataset: xr.Dataset) -> str:
    attrs = dataset.attrs
    first = [f"run {str(attrs.get('uid', ''))[:8]}", f"{dataset.sizes['image']} images"]
    first += [f"{key} {attrs[key]}" for key in ("sample", "operator") if key in attrs]
    return (", ".join(first)
            + f"\n{attrs['frame_size_m'] * 1e9:g} nm frames, heights in pm above the plane")
