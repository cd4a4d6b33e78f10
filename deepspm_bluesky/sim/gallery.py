"""A picture of what the simulator produces: one image per tip state, plus a dip's crater,
and every surface family (`sim.families`) imaged by every tip state that images.

Drawn with matplotlib's object API on the Agg canvas, so it needs no display and leaves
pyplot's global state alone. The command line calls it as ``deepspm-bluesky sim-gallery``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..actions import load_actions
from .families import FAMILIES
from .microscope import SimulatedMicroscope
from .tip import STATES, random_tip

FLAT_STATES = ("crashed", "no_contact")
IMAGING_STATES = tuple(s for s in STATES if s not in FLAT_STATES)
FAMILY_FRAME_NM = {"ag100_mgpc": 10.0, "au111": 20.0, "si111_7x7": 12.0, "h_si100": 8.0,
                   "graphite": 3.0, "molecular_islands": 30.0, "step_bunches": 40.0,
                   "clusters": 30.0}  # a frame that shows what each family looks like


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


def family_images(*, seed: int = 0, pixels: int = 64,
                  frames_nm: dict[str, float] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Raw height images (m) of every family seen by every imaging tip state.

    The same place of each family's area is imaged by tips drawn with the same seed, so a
    row differs only by the tip: its defects act alike on every surface.

    Returns
    -------
    dict
        ``{(family, state): image}`` over `FAMILIES` x `IMAGING_STATES`.
    """
    frames_nm = {**FAMILY_FRAME_NM, **(frames_nm or {})}
    images = {}
    for family in FAMILIES:
        size_m = frames_nm[family] * 1e-9
        for state in IMAGING_STATES:
            microscope = SimulatedMicroscope(seed=seed, family=family)
            microscope.tip = random_tip(np.random.default_rng([seed, 7]), state)
            images[family, state] = microscope.scan(0.0, 0.0, size_m, pixels)
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
    """Draw `gallery_images`, then `family_images` (one row per family), into a PNG at
    `path` and return the path.

    Each panel shows the plane-subtracted image in picometres; the flat images of a crashed
    and a retracted tip are labelled with their raw mean height instead.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = gallery_images(seed=seed, size_nm=size_nm, pixels=pixels)
    fig = Figure(figsize=(16, 7 + 2.2 * len(FAMILIES)), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[7, 2.2 * len(FAMILIES)])
    axes = top.subplots(2, 5)
    axes[-1, -1].set_axis_off()
    for ax, (label, image) in zip(axes.ravel(), images.items(), strict=False):
        side = _side_nm(label, size_nm)
        shown = image * 0.0 if label in FLAT_STATES else _plane_removed(image)
        artist = ax.imshow(shown * 1e12, cmap="afmhot", origin="lower",
                           extent=(-side / 2, side / 2, -side / 2, side / 2))
        top.colorbar(artist, ax=ax, shrink=0.8, label="height (pm)")
        note = (f"flat at {image.mean() * 1e9:+.0f} nm"
                if label in FLAT_STATES else f"range {np.ptp(shown) * 1e12:.0f} pm")
        ax.set_title(f"{label}\n{note}", fontsize=10)
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
    top.suptitle(f"Simulated STM, seed {seed}: {pixels} px, {size_nm:g} nm frames")
    _draw_families(bottom, family_images(seed=seed, pixels=pixels))
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


def _draw_families(fig, images: dict[tuple[str, str], np.ndarray]) -> None:
    """One row per family, one column per imaging tip state (plane removed, pm)."""
    axes = fig.subplots(len(FAMILIES), len(IMAGING_STATES))
    for (family, state), ax in zip(images, axes.ravel(), strict=True):
        shown = _plane_removed(images[family, state]) * 1e12
        side = FAMILY_FRAME_NM[family]
        ax.imshow(shown, cmap="afmhot", origin="lower",
                  extent=(-side / 2, side / 2, -side / 2, side / 2))
        ax.set_title(f"{family}, {state} ({side:g} nm, {np.ptp(shown):.0f} pm)", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("Surface families (rows) seen by each imaging tip state (columns)")
