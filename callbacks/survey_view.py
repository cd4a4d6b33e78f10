"""What a person watching a survey wants to see, kept up to date from its documents.

`SurveyView` is fed a run's documents (start, descriptors, events) and keeps the latest image
with its verdict, P(good) over time and the approach-area map: scanned frames, used ground
(forbidden discs, as `deepspm_bluesky.navigation.Navigator` marks them), action sites and
crashes. It draws nothing: the live plots take a `snapshot` and draw that, so the survey's
thread only does cheap bookkeeping.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from deepspm_bluesky.actions import ActionTable, load_actions
from deepspm_bluesky.navigation import Navigator
from deepspm_bluesky.policy import NEW_AREA_ACTION, mark_action, mark_image

AREA_NM = 850.0  # approach area when the start document names no instrument scan range
FRAME_NM = 10.0  # frame side when the descriptor's configuration names none


@dataclass(frozen=True)
class ViewSnapshot:
    """A copy of the view at one moment, safe to draw from another thread."""

    run_uid: str
    sample: str
    started: float
    updated: float
    images: int
    verdicts: dict[str, int]
    image: np.ndarray | None
    image_seq: int
    image_verdict: str
    image_p_good: float
    last_good: float | None
    times: np.ndarray
    p_good: np.ndarray
    good: np.ndarray
    area_nm: float
    frame_nm: float
    area_index: int
    free: np.ndarray
    frames: np.ndarray  # (n, 2) centres x, y in nm, this approach area
    frame_good: np.ndarray
    actions: np.ndarray  # (n, 2)
    crashes: np.ndarray  # (n, 2)
    outages: int
    exit_status: str


@dataclass
class _Run:
    uid: str = ""
    sample: str = ""
    started: float = math.nan
    updated: float = math.nan
    frame_nm: float = FRAME_NM
    streams: dict[str, str] = field(default_factory=dict)  # descriptor uid -> stream name
    image: np.ndarray | None = None
    image_seq: int = 0
    image_verdict: str = ""
    image_p_good: float = math.nan
    last_good: float | None = None
    times: list[float] = field(default_factory=list)
    p_good: list[float] = field(default_factory=list)
    good: list[bool] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    frames: list[tuple[float, float]] = field(default_factory=list)
    frame_good: list[bool] = field(default_factory=list)
    actions: list[tuple[float, float]] = field(default_factory=list)
    crashes: list[tuple[float, float]] = field(default_factory=list)
    area_index: int | None = None  # the coarse positioner's count, when recorded
    outages: int = 0
    exit_status: str = ""


class SurveyView:
    """The state of the current survey run, from its documents; thread-safe.

    Parameters
    ----------
    actions
        The action table whose forbidden radii mark used ground (default: the shipped one).
    """

    def __init__(self, actions: ActionTable | None = None) -> None:
        self.actions = load_actions() if actions is None else actions
        self._lock = threading.Lock()
        self.changes = 0  # counts every change: a drawer compares it with what it drew
        self._reset({})

    def _reset(self, start: dict) -> None:
        instrument = start.get("instrument") or {}
        area_nm = float(instrument.get("scan_range_nm") or AREA_NM)
        self.nav = Navigator(area_nm)
        self.run = _Run(uid=start.get("uid", ""), sample=str(start.get("sample", "")),
                        started=start.get("time", math.nan), updated=start.get("time", math.nan))

    def __call__(self, name: str, doc: dict) -> None:
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            return
        with self._lock:
            handler(doc)
            self.changes += 1

    # -- documents -------------------------------------------------------------------------
    def _start(self, doc: dict) -> None:
        self._reset(doc)

    def _descriptor(self, doc: dict) -> None:
        self.run.streams[doc["uid"]] = doc.get("name", "")
        for config in doc.get("configuration", {}).values():
            for key, value in config.get("data", {}).items():
                if key.endswith("scanner_size_nm") and isinstance(value, (int, float)):
                    self.run.frame_nm = float(value)

    def _event(self, doc: dict) -> None:
        stream = self.run.streams.get(doc["descriptor"])
        self.run.updated = doc["time"]
        if stream == "primary":
            self._image(doc)
        elif stream == "actions":
            self._action(doc["data"])
        elif stream == "outages":
            self.run.outages += 1

    def _stop(self, doc: dict) -> None:
        self.run.exit_status = doc.get("exit_status", "")
        self.run.updated = doc.get("time", self.run.updated)

    def _image(self, doc: dict) -> None:
        data, run = doc["data"], self.run
        x_nm, y_nm = _position(data)
        verdict, p_good = str(data.get("verdict", "")), float(data.get("p_good", math.nan))
        good = verdict == "good"
        image = next((v for k, v in data.items() if k.endswith("_image")), None)
        if image is not None:
            run.image = np.asarray(image)
        run.image_seq, run.image_verdict, run.image_p_good = doc["seq_num"], verdict, p_good
        run.verdicts[verdict] = run.verdicts.get(verdict, 0) + 1
        run.times.append(doc["time"])
        run.p_good.append(p_good)
        run.good.append(good)
        if good:
            run.last_good = doc["time"]
        area = next((v for k, v in data.items() if k.endswith("coarse_area")), None)
        if isinstance(area, (int, np.integer)):
            run.area_index = int(area)
        run.frames.append((x_nm, y_nm))
        run.frame_good.append(good)
        if math.isfinite(x_nm) and math.isfinite(y_nm):
            if verdict == "crash":
                run.crashes.append((x_nm, y_nm))
            mark_image(self.nav, self.actions, verdict, x_nm, y_nm)

    def _action(self, data: dict) -> None:
        name, run = str(data.get("action", "")), self.run
        x_nm, y_nm = float(data.get("x_nm", math.nan)), float(data.get("y_nm", math.nan))
        outcome = str(data.get("outcome", ""))
        if name == NEW_AREA_ACTION:
            run.frames.clear()
            run.frame_good.clear()
            run.actions.clear()
            run.crashes.clear()
        elif name in self.actions.names and outcome != "refused" \
                and math.isfinite(x_nm) and math.isfinite(y_nm):
            run.actions.append((x_nm, y_nm))
        else:
            return
        mark_action(self.nav, self.actions, name, x_nm, y_nm, outcome)

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> ViewSnapshot:
        """A consistent copy of everything drawn."""
        with self._lock:
            run = self.run
            return ViewSnapshot(
                run_uid=run.uid, sample=run.sample, started=run.started, updated=run.updated,
                images=len(run.times), verdicts=dict(run.verdicts), image=run.image,
                image_seq=run.image_seq, image_verdict=run.image_verdict,
                image_p_good=run.image_p_good, last_good=run.last_good,
                times=np.array(run.times), p_good=np.array(run.p_good),
                good=np.array(run.good, bool), area_nm=self.nav.area_nm,
                frame_nm=run.frame_nm,
                area_index=self.nav.area_index if run.area_index is None else run.area_index,
                free=self.nav.free.copy(), frames=_points(run.frames),
                frame_good=np.array(run.frame_good, bool), actions=_points(run.actions),
                crashes=_points(run.crashes), outages=run.outages,
                exit_status=run.exit_status)


def _position(data: dict) -> tuple[float, float]:
    """The frame centre (x, y) nm from an image event's scanner readings."""
    x = next((v for k, v in data.items() if k.endswith("scanner_x_nm")), math.nan)
    y = next((v for k, v in data.items() if k.endswith("scanner_y_nm")), math.nan)
    return float(x), float(y)


def _points(points: list[tuple[float, float]]) -> np.ndarray:
    return np.array(points, float).reshape(-1, 2)


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: "0.4 s", "45 s", "12 min", "3.5 h"."""
    if not math.isfinite(seconds):
        return "an unknown time"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
