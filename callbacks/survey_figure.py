"""The survey figure: latest image levelled, P(good) over time, the approach-area map.

`SurveyFigure` lays out three panels on any matplotlib figure and updates them in place
from a `ViewSnapshot`; the live plot callbacks (`live_plots`) decide when and where it is
drawn.
"""

from __future__ import annotations

import math
import time

import numpy as np

from deepspm_bluesky.imaging import flatten_plane
from deepspm_bluesky.judging import GOOD_TIP_THRESHOLD

from .survey_view import ViewSnapshot, duration_text

FIGURE_SIZE_IN = (15.0, 5.2)
VERDICT_COLOURS = {"good": "tab:green", "bad": "tab:orange", "crash": "tab:red",
                   "no_contact": "tab:purple", "debris": "tab:brown"}


class SurveyFigure:
    """Three panels on a matplotlib figure, updated in place from a `ViewSnapshot`.

    Parameters
    ----------
    fig
        The figure to draw on (emptied first).
    """

    def __init__(self, fig) -> None:
        self.fig = fig
        fig.clear()
        self.ax_image, self.ax_p, self.ax_map = fig.subplots(
            1, 3, gridspec_kw={"width_ratios": [1, 1.5, 1.1]})
        fig.subplots_adjust(left=0.04, right=0.98, bottom=0.13, top=0.83, wspace=0.36)
        self._setup_image()
        self._setup_p_good()
        self._setup_map()
        self.header = fig.suptitle("waiting for a survey", fontsize=12)

    def _setup_image(self) -> None:
        ax = self.ax_image
        self.image = ax.imshow(np.zeros((2, 2)), cmap="afmhot", origin="lower",
                               interpolation="nearest", extent=(0, 1, 0, 1))
        self.colorbar = self.fig.colorbar(self.image, ax=ax, fraction=0.046, pad=0.03)
        self.colorbar.set_label("height above the plane (pm)", labelpad=2)
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
        ax.set_title("latest image (plane removed)")

    def _setup_p_good(self) -> None:
        ax = self.ax_p
        ax.axhline(GOOD_TIP_THRESHOLD, color="0.5", lw=1, ls="--",
                   label=f"good from {GOOD_TIP_THRESHOLD}")
        style = {"ls": "none", "ms": 3}
        self.p_good_line, = ax.plot([], [], "o", color=VERDICT_COLOURS["good"],
                                    label="good tip", **style)
        self.p_bad_line, = ax.plot([], [], "o", color=VERDICT_COLOURS["bad"],
                                   label="bad tip", **style)
        self.p_failed_line, = ax.plot([], [], "v", color=VERDICT_COLOURS["crash"],
                                      label="checks failed (crash, contact, debris)", **style)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("P(good tip)")
        ax.set_title("P(good) of every image")
        ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
        ax.grid(alpha=0.3)

    def _setup_map(self) -> None:
        ax = self.ax_map
        self.used = ax.imshow(np.zeros((2, 2)), cmap="Greys", vmin=0, vmax=2.5,
                              origin="lower", interpolation="nearest", extent=(0, 1, 0, 1))
        self.frames_good, = ax.plot([], [], "s", color=VERDICT_COLOURS["good"], ms=3,
                                    label="frame, good tip")
        self.frames_other, = ax.plot([], [], "s", color=VERDICT_COLOURS["bad"], ms=3,
                                     label="frame, other")
        self.action_sites, = ax.plot([], [], "x", color="tab:blue", ms=6, mew=1.5,
                                     label="conditioning action")
        self.crash_sites, = ax.plot([], [], "*", color=VERDICT_COLOURS["crash"], ms=11,
                                    mec="k", mew=0.5, label="crash")
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)

    # -- updating --------------------------------------------------------------------------
    def update(self, view: ViewSnapshot, *, now: float | None = None) -> None:
        """Put `view` on the figure (the caller redraws the canvas)."""
        now = time.time() if now is None else now
        self.header.set_text(_header(view, now))
        self._update_image(view)
        self._update_p_good(view)
        self._update_map(view)

    def _update_image(self, view: ViewSnapshot) -> None:
        if view.image is None:
            return
        levelled_pm = flatten_plane(view.image) * 1e12
        low, high = np.nanpercentile(levelled_pm, [1.0, 99.5])
        self.image.set_data(levelled_pm)
        self.image.set_clim(low, max(high, low + 1.0))
        self.image.set_extent((0, view.frame_nm, 0, view.frame_nm))
        p = "" if math.isnan(view.image_p_good) else f", P(good) {view.image_p_good:.2f}"
        self.ax_image.set_title(f"image {view.image_seq}: {view.image_verdict or '?'}{p}",
                                color=VERDICT_COLOURS.get(view.image_verdict, "k"),
                                fontweight="bold")

    def _update_p_good(self, view: ViewSnapshot) -> None:
        span_s = _span_s(view)
        scale, unit = ((1.0, "seconds") if span_s < 120 else (60.0, "minutes")
                       if span_s < 3 * 3600 else (3600.0, "hours"))
        t = (view.times - view.started) / scale
        known = np.isfinite(view.p_good)
        self.p_good_line.set_data(t[view.good], view.p_good[view.good])
        self.p_bad_line.set_data(t[known & ~view.good], view.p_good[known & ~view.good])
        self.p_failed_line.set_data(t[~known], np.zeros(int((~known).sum())))
        self.ax_p.set_xlim(0, max(float(t.max()) if t.size else 0.0, 1.0 / scale) * 1.02)
        self.ax_p.set_xlabel(f"{unit} since the survey started")

    def _update_map(self, view: ViewSnapshot) -> None:
        half = view.area_nm / 2
        cell = view.area_nm / max(view.free.shape[0] - 1, 1)
        self.used.set_data((~view.free).astype(float))
        self.used.set_extent((-half - cell / 2, half + cell / 2, -half - cell / 2,
                              half + cell / 2))
        frames = view.frames
        self.frames_good.set_data(frames[view.frame_good, 0], frames[view.frame_good, 1])
        self.frames_other.set_data(frames[~view.frame_good, 0], frames[~view.frame_good, 1])
        self.action_sites.set_data(view.actions[:, 0], view.actions[:, 1])
        self.crash_sites.set_data(view.crashes[:, 0], view.crashes[:, 1])
        span = _map_span_nm(view)
        self.ax_map.set_xlim(-span, span)
        self.ax_map.set_ylim(-span, span)
        used = 100 * (1 - view.free.mean())
        self.ax_map.set_title(f"approach area {view.area_index}: {used:.1f} % used (grey)")


def _span_s(view: ViewSnapshot) -> float:
    return float(view.times[-1] - view.started) if view.times.size else 0.0


def _map_span_nm(view: ViewSnapshot) -> float:
    """Half-width shown: the used part of the area with a margin, at least 100 nm."""
    points = np.concatenate([view.frames, view.actions, view.crashes])
    used_rows, used_cols = np.nonzero(~view.free)
    cell = view.area_nm / max(view.free.shape[0] - 1, 1)
    reach = [np.abs(points).max()] if points.size else []
    if used_rows.size:
        centre = (view.free.shape[0] - 1) / 2
        reach.append(cell * max(np.abs(used_rows - centre).max(), np.abs(used_cols - centre).max()))
    return float(min(view.area_nm / 2, max([100.0, *(1.15 * r + cell for r in reach)])))


def _header(view: ViewSnapshot, now: float) -> str:
    """Run, sample, images, good fraction, time since the last good image, ending."""
    if not view.run_uid:
        return "waiting for a survey"
    sample = f" · sample {view.sample}" if view.sample else ""
    good = view.verdicts.get("good", 0)
    fraction = f" ({100 * good / view.images:.0f} % good tip)" if view.images else ""
    since = ("no good image yet" if view.last_good is None
             else f"last good image {duration_text(now - view.last_good)} ago")
    outages = f" · {view.outages} outage{'s' * (view.outages != 1)}" if view.outages else ""
    state = f"ended: {view.exit_status}" if view.exit_status else "running"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return (f"run {view.run_uid[:8]}{sample} · {state} · {view.images} images{fraction} · "
            f"{since}{outages}\nas of {when}")
