"""A picture of what the simulator produces: one image per tip state, plus a dip's crater.

Drawn with matplotlib's object API on the Agg canvas, so it needs no display and leaves
pyplot's global state alone. The command line calls it as ``deepspm-bluesky sim-gallery``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..actions import load_actions
from .microscope import SimulatedMicroscope
from .tip import STATES

FLAT_STATES = ("crashed", "no_contact")


def gallery_images(*, seed: int = 0, x_nm: float = 0.0, y_nm: float = 0.0,
                   size_nm: float = 10.0, pixels: int = 64) -> dict[str, np.ndarray]:
    """Raw height images (m) of the same frame, one per tip state, and one after a dip.

    Returns
    -------
    dict
        ``{state: image}`` for every state in `STATES`, then ``"after dip -2.5 nm"``: a
        good tip's 2.5x larger frame around a -2.5 nm dip just made at its centre, then
        ``"overview 200 nm"``: terraces, molecules and clusters around it.
    """
    frame = (x_nm * 1e-9, y_nm * 1e-9, size_nm * 1e-9, pixels)
    images = {}
    for state in STATES:
        images[state] = SimulatedMicroscope(seed=seed, tip_state=state).scan(*frame)
    microscope = SimulatedMicroscope(seed=seed, tip_state="good")
    microscope.condition(load_actions().get("dip -2.5 nm"), frame[0], frame[1])
    images["after dip -2.5 nm"] = microscope.scan(frame[0], frame[1], 2.5 * frame[2], pixels)
    images["overview 200 nm"] = microscope.scan(frame[0], frame[1], 200e-9, 128)
    return images


def _side_nm(label: str, size_nm: float) -> float:
    if label.startswith("after"):
        return 2.5 * size_nm
    if label.startswith("overview"):
        return 200.0
    return size_nm


def _plane_removed(image: np.ndarray) -> np.ndarray:
    """Least-squares plane subtracted (display only)."""
    rows, cols = np.indices(image.shape)
    design = np.stack([rows.ravel(), cols.ravel(), np.ones(image.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, image.ravel().astype(float), rcond=None)
    return image - (design @ coef).reshape(image.shape)


def draw_gallery(path: str | Path, *, seed: int = 0, size_nm: float = 10.0,
                 pixels: int = 64) -> Path:
    """Draw `gallery_images` as a grid of panels into a PNG at `path` and return the path.

    Each panel shows the plane-subtracted image in picometres; the flat images of a crashed
    and a retracted tip are labelled with their raw mean height instead.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = gallery_images(seed=seed, size_nm=size_nm, pixels=pixels)
    fig = Figure(figsize=(16, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 5)
    axes[-1, -1].set_axis_off()
    for ax, (label, image) in zip(axes.ravel(), images.items(), strict=False):
        side = _side_nm(label, size_nm)
        shown = image * 0.0 if label in FLAT_STATES else _plane_removed(image)
        artist = ax.imshow(shown * 1e12, cmap="afmhot", origin="lower",
                           extent=(-side / 2, side / 2, -side / 2, side / 2))
        fig.colorbar(artist, ax=ax, shrink=0.8, label="height (pm)")
        note = (f"flat at {image.mean() * 1e9:+.0f} nm"
                if label in FLAT_STATES else f"range {np.ptp(shown) * 1e12:.0f} pm")
        ax.set_title(f"{label}\n{note}", fontsize=10)
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
    fig.suptitle(f"Simulated STM, seed {seed}: {pixels} px, {size_nm:g} nm frames")
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path
