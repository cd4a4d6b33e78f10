"""What the watch page shows, read from Tiled cheaply.

The newest survey is looked up at most once per `refresh_s`, and its tables are read again
only when its image count, its stop document or its corrections change; every viewer is
served the same snapshot. Only a few scalar columns are read, never the image stack, and the
snapshot keeps a bounded amount (a binned P(good) series, the current approach area, the last
actions), so the page's memory does not grow with the survey's length.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd
from tiled.client.container import Container

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.judging import GOOD_TIP_THRESHOLD

from .corrections import corrections_of, review_image
from .images import image_png

CHART_POINTS = 600  # P(good) over time: at most this many points (bins of images beyond)
MAP_FRAMES = 3000  # the most recent frames of the current approach area drawn on the map
RECENT_ACTIONS = 12
RECENT_OUTAGES = 5
PNG_CACHE = 256  # rendered images kept (a PNG of 64 x 64 pixels is ~6 kB)
DEFAULT_AREA_NM = 850.0  # the simulator's approach area, when the run does not say
PRIMARY_COLUMNS = ("time", "scanner_x_nm", "scanner_y_nm", "coarse_area", "check", "verdict",
                   "p_good")


class CatalogReader:
    """Reads what the watch page shows from a Tiled client, shared by all its viewers.

    Parameters
    ----------
    client
        A Tiled client of a catalog of Bluesky runs (`deepspm_bluesky.data.open_catalog`).
    refresh_s
        Look for new data at most this often.
    clock
        Wall-clock time in seconds (injectable for tests).
    """

    def __init__(self, client, *, refresh_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.refresh_s = float(refresh_s)
        self.clock = clock
        self._lock = threading.RLock()  # one Tiled request at a time (in-process transport)
        self._image_keys: dict[str, str] = {}
        self._checked = -math.inf
        self._key: tuple | None = None
        self._snapshot: dict = empty_snapshot()
        self._pngs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._labels: OrderedDict[tuple[str, int], pd.DataFrame] = OrderedDict()
        self._radius_nm = {action.name: action.forbid_radius_nm for action in load_actions()}

    # -- the newest survey ----------------------------------------------------------------
    def survey(self) -> dict:
        """The newest run's snapshot (see `build_snapshot`), at most `refresh_s` old.

        One look at Tiled (two requests: the newest run, its image count) per `refresh_s`,
        whatever the number of viewers, by the request that finds the snapshot stale; the
        others are served the current snapshot meanwhile instead of waiting (only the very
        first waits). The tables are read again only when the look found a change.
        """
        stale = time.monotonic() - self._checked >= self.refresh_s
        if stale and self._lock.acquire(blocking=self._checked == -math.inf):
            try:
                if time.monotonic() - self._checked >= self.refresh_s:
                    try:
                        self._refresh()
                    except Exception:  # Tiled unreachable for a moment: the last snapshot
                        logging.getLogger(__name__).exception("reading the catalog failed")
                    self._checked = time.monotonic()
            finally:
                self._lock.release()
        return self._snapshot

    def status(self) -> dict:
        """The newest survey's state for other dashboards (`/api/status`)."""
        return self.survey()["status"]

    def _refresh(self) -> None:
        try:
            run = self.client.values()[-1]
        except IndexError:
            self._key, self._snapshot = None, empty_snapshot()
            return
        metadata = run.metadata
        uid = metadata["start"]["uid"]
        key = (uid, self._image_count(uid), "stop" in metadata, len(corrections_of(metadata)))
        if key != self._key:
            self._snapshot = build_snapshot(run, radius_nm=self._radius_nm)
            self._key = key

    def _image_count(self, uid: str) -> int:
        """Images run `uid` holds now: one request for its image array's shape."""
        try:
            return int(self._images(uid).shape[0])
        except KeyError:  # no primary stream or no image yet
            return 0

    def _images(self, uid: str):
        """Run `uid`'s image array node (its name looked up once per run)."""
        if uid not in self._image_keys:
            self._image_keys[uid] = image_node(self._run(uid)).item["id"]
        return node_at(self.client, uid, "primary", self._image_keys[uid])

    # -- any run ----------------------------------------------------------------------------
    def runs(self, limit: int = 20) -> list[dict]:
        """The newest `limit` runs, newest first: uid, time, mode, images, end, corrections."""
        with self._lock:
            return [run_summary(run.metadata) for run in reversed(self.client.values().tail(limit))]

    def image_page(self, uid: str, offset: int, limit: int) -> dict:
        """Images `offset` to `offset + limit` of a run (newest first when offset counts back).

        Returns ``{"uid", "images": n, "items": [{index, verdict, p_good, check, review}]}``
        for the indices ``n - 1 - offset`` downwards.
        """
        with self._lock:
            run = self._run(uid)
            n = image_count(run)
            table = self._judgements(run, uid, n)
            corrections = corrections_of(run.metadata)
        stop = max(n - offset, 0)
        indices = range(stop - 1, max(stop - limit, 0) - 1, -1)
        return {"uid": uid, "images": n,
                "items": [image_item(table, index, corrections) for index in indices]}

    def png(self, uid: str, index: int) -> bytes:
        """Image `index` of run `uid`, levelled and rendered (cached; rendered unlocked)."""
        key = (uid, index)
        with self._lock:
            if key in self._pngs:
                self._pngs.move_to_end(key)
                return self._pngs[key]
            node = self._images(uid)
            if not 0 <= index < node.shape[0]:
                raise IndexError(f"run {uid[:8]} has {node.shape[0]} images; no image {index}")
            raw = node[index]
        data = image_png(raw)
        with self._lock:
            self._pngs[key] = data
            if len(self._pngs) > PNG_CACHE:
                self._pngs.popitem(last=False)
        return data

    def review(self, uid: str, index: int, review: str) -> dict:
        """Store a person's review of image `index` of run `uid` (`review_image`), and look
        at the catalog again at the next request."""
        with self._lock:
            entry = review_image(self._run(uid), index, review)
            self._refresh()  # the next poll shows it
            return entry

    def _run(self, uid: str):
        try:
            return self.client[uid]
        except (KeyError, ValueError):
            raise KeyError(f"no run {uid!r} in the catalog") from None

    def _judgements(self, run, uid: str, n: int) -> pd.DataFrame:
        key = (uid, n)
        if key not in self._labels:
            self._labels[key] = read_columns(run["primary"], ("verdict", "p_good", "check"),
                                             prefix="")[:n] if n else pd.DataFrame()
            if len(self._labels) > 4:
                self._labels.popitem(last=False)
        return self._labels[key]


def empty_snapshot() -> dict:
    return {"status": {"uid": None, "running": False, "images": 0, "good_fraction": None,
                       "latest_verdict": None, "last_event_time": None, "version": "empty"}}


def image_node(run):
    """The run's primary stack of 2-D images (the one array of three dimensions)."""
    stream = run["primary"]
    for key in stream.base:
        if key != "internal":
            node = stream.base[key]
            if len(node.shape) == 3:
                return node
    raise KeyError(f"run {run.metadata['start']['uid'][:8]} records no image stack")


def node_at(client, *path: str):
    """The node at ``client/path[0]/path[1]/...`` in one request (Tiled's own path lookup;
    the catalog's ``[]`` would take a joined path for a partial uid)."""
    return Container.__getitem__(client, "/".join(path))


def image_count(run) -> int:
    """Images the run holds now (0 before its first `primary` event reaches Tiled)."""
    if "primary" not in run:
        return 0
    try:
        return int(image_node(run).shape[0])
    except KeyError:
        return 0


def device_prefix(start: dict) -> str:
    """``"stm_"`` for data keys such as ``stm_scanner_x_nm`` (the run's first detector)."""
    detectors = start.get("detectors") or ["stm"]
    return f"{detectors[0]}_"


def read_columns(stream, names: tuple[str, ...], *, prefix: str) -> pd.DataFrame:
    """The named columns of a stream's table (device ones given without `prefix`)."""
    table = stream.base["internal"]
    present = set(table.columns)
    wanted = {name: (name if name in present else prefix + name) for name in names}
    frame = table.read([column for column in wanted.values() if column in present])
    return frame.rename(columns={column: name for name, column in wanted.items()})


def build_snapshot(run, *, radius_nm: dict[str, float]) -> dict:
    """Everything the page shows of one run: status, latest image, chart, map, actions."""
    metadata = run.metadata
    start, stop = metadata["start"], metadata.get("stop")
    uid, prefix = start["uid"], device_prefix(start)
    n = image_count(run)
    primary = read_columns(run["primary"], PRIMARY_COLUMNS, prefix=prefix)[:n] if n \
        else pd.DataFrame(columns=list(PRIMARY_COLUMNS))
    actions = read_columns(run["actions"], ("time", "action", "x_nm", "y_nm", "reason",
                                            "outcome", "chooser"), prefix="") \
        if "actions" in run else pd.DataFrame(columns=["time"])
    outages = read_columns(run["outages"], ("outage_start", "outage_end", "outage_s",
                                            "cause"), prefix="") \
        if "outages" in run else pd.DataFrame(columns=["outage_s"])
    corrections = corrections_of(metadata)
    verdicts = primary["verdict"].astype(str).to_numpy() if n else np.array([], str)
    good = verdicts == "good"
    last_good = float(primary["time"].to_numpy()[good][-1]) if good.any() else None
    times = [float(primary["time"].iloc[-1])] if n else []
    if len(actions):
        times.append(float(actions["time"].iloc[-1]))
    latest = image_item(primary, n - 1, corrections) if n else None
    status = {
        "uid": uid, "running": stop is None, "images": n,
        "good_fraction": float(good.mean()) if n else None,
        "latest_verdict": latest["verdict"] if latest else None,
        "latest_p_good": latest["p_good"] if latest else None,
        "last_event_time": max(times) if times else None,
        "last_good_time": last_good,
        "corrections": len(corrections),
        "version": f"{uid}:{n}:{len(actions)}:{int(stop is not None)}:{len(corrections)}",
    }
    return {
        "status": status,
        "run": run_summary(metadata),
        "latest": latest,
        "verdicts": dict(zip(*np.unique(verdicts, return_counts=True), strict=True))
        if n else {},
        "area": area_map(run, primary, actions, radius_nm=radius_nm),
        "chart": p_good_series(primary),
        "actions": recent_actions(actions, primary),
        "outages": {"count": len(outages),
                    "total_s": float(np.nansum(outages["outage_s"])) if len(outages) else 0.0,
                    "recent": _records(outages.tail(RECENT_OUTAGES).iloc[::-1])},
    }


def run_summary(metadata: dict) -> dict:
    """One line of the list of surveys: what was asked, how it ended, how much was reviewed."""
    start, stop = metadata["start"], metadata.get("stop") or {}
    plan_args = start.get("plan_args") or {}
    return {
        "uid": start["uid"], "scan_id": start.get("scan_id"), "time": start.get("time"),
        "plan": start.get("plan_name", ""), "mode": plan_args.get("mode", ""),
        "max_images": plan_args.get("max_images"),
        "backend": (start.get("instrument") or {}).get("backend", ""),
        "images": (stop.get("num_events") or {}).get("primary") if stop else None,
        "exit_status": stop.get("exit_status") if stop else None,
        "reason": (stop.get("reason") or "").split(" | ")[0] if stop else "",
        "end_time": stop.get("time") if stop else None,
        "corrections": len(corrections_of(metadata)),
    }


def image_item(table: pd.DataFrame, index: int, corrections: dict) -> dict:
    """One image's judgement, with the person's review if any."""
    row = table.iloc[index]
    p_good = float(row["p_good"])
    item = {"index": int(index), "verdict": str(row["verdict"]), "check": str(row["check"]),
            "p_good": p_good if math.isfinite(p_good) else None,
            "review": corrections.get(str(index))}
    if "time" in row:
        item["time"] = float(row["time"])
    return item


def p_good_series(primary: pd.DataFrame) -> dict:
    """P(good) against image number, in at most `CHART_POINTS` bins (mean P(good) and the
    most frequent verdict of each), with DeepSPM's threshold."""
    n = len(primary)
    width = max(1, math.ceil(n / CHART_POINTS))
    points = []
    p_good = primary["p_good"].to_numpy(float) if n else np.array([])
    verdicts = primary["verdict"].astype(str).to_numpy() if n else np.array([], str)
    for first in range(0, n, width):
        chunk = p_good[first:first + width]
        finite = chunk[np.isfinite(chunk)]
        names, counts = np.unique(verdicts[first:first + width], return_counts=True)
        points.append([first + (len(chunk) - 1) / 2,
                       round(float(finite.mean()), 4) if len(finite) else None,
                       str(names[np.argmax(counts)])])
    return {"bin": width, "threshold": GOOD_TIP_THRESHOLD, "points": points}


def area_map(run, primary: pd.DataFrame, actions: pd.DataFrame, *,
             radius_nm: dict[str, float]) -> dict:
    """The current approach area: its frames (centre, verdict), action sites with their
    forbidden radius, and crashes."""
    start = run.metadata["start"]
    area_nm = float((start.get("instrument") or {}).get("scan_range_nm") or DEFAULT_AREA_NM)
    frame_nm = frame_size_nm(run)
    if not len(primary):
        return {"index": None, "changes": 0, "area_nm": area_nm, "frame_nm": frame_nm,
                "frames": [], "actions": [], "crashes": []}
    current = int(primary["coarse_area"].iloc[-1]) if "coarse_area" in primary else 0
    here = primary[primary["coarse_area"] == current] if "coarse_area" in primary else primary
    since = float(here["time"].iloc[0])
    acted = actions[(actions["time"] >= since) & (actions["action"] != "new area")] \
        if len(actions) else actions
    frames = here.tail(MAP_FRAMES)
    crashes = here[here["check"] == "crash"]
    return {
        "index": current,
        "changes": int((actions["action"] == "new area").sum()) if len(actions) else 0,
        "area_nm": area_nm, "frame_nm": frame_nm,
        "frames": [[round(float(x), 2), round(float(y), 2), str(v)] for x, y, v in
                   zip(frames["scanner_x_nm"], frames["scanner_y_nm"], frames["verdict"],
                       strict=True)],
        "actions": [[round(float(x), 2), round(float(y), 2), str(name),
                     radius_nm.get(str(name), 0.0)] for x, y, name in
                    zip(acted.get("x_nm", []), acted.get("y_nm", []), acted.get("action", []),
                        strict=True)],
        "crashes": [[round(float(x), 2), round(float(y), 2)] for x, y in
                    zip(crashes["scanner_x_nm"], crashes["scanner_y_nm"], strict=True)],
    }


def frame_size_nm(run) -> float | None:
    """The frame side recorded in the primary stream's configuration, if any."""
    configuration = run["primary"].metadata.get("configuration") or {}
    for device in configuration.values():
        for key, value in (device.get("data") or {}).items():
            if key.endswith("scanner_size_nm"):
                return float(value)
    return None


def recent_actions(actions: pd.DataFrame, primary: pd.DataFrame) -> list[dict]:
    """The last actions, newest first, each with the verdict of the next image after it."""
    recent = actions.tail(RECENT_ACTIONS).iloc[::-1]
    times = primary["time"].to_numpy(float) if len(primary) else np.array([])
    rows = _records(recent)
    for row in rows:
        after = int(np.searchsorted(times, row["time"], side="right"))
        row["next_verdict"] = str(primary["verdict"].iloc[after]) if after < len(times) else None
        row["next_p_good"] = _finite(primary["p_good"].iloc[after]) if after < len(times) \
            else None
    return rows


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{key: (_finite(value) if isinstance(value, (float, np.floating)) else
                   value.item() if isinstance(value, np.generic) else value)
             for key, value in row.items()} for row in frame.to_dict("records")]


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
