"""What the page shows of one run, computed from its tables (no Tiled here).

A snapshot is bounded whatever the survey's length: a binned P(good) series, the current
approach area's most recent frames, the last actions and outages.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepspm_bluesky.judging import GOOD_TIP_THRESHOLD

from .corrections import corrections_of

CHART_POINTS = 600  # P(good) over time: at most this many points (bins of images beyond)
MAP_FRAMES = 3000  # the most recent frames of the current approach area drawn on the map
RECENT_ACTIONS = 12
RECENT_OUTAGES = 5
DEFAULT_AREA_NM = 850.0  # the simulator's approach area, when the run does not say
PRIMARY_COLUMNS = ("time", "scanner_x_nm", "scanner_y_nm", "coarse_area", "check", "verdict",
                   "p_good")
ACTION_COLUMNS = ("time", "action", "x_nm", "y_nm", "reason", "outcome", "chooser")
OUTAGE_COLUMNS = ("outage_start", "outage_end", "outage_s", "cause")


def empty_snapshot() -> dict:
    """The snapshot of a catalog without runs."""
    return {"status": {"uid": None, "running": False, "images": 0, "good_fraction": None,
                       "latest_verdict": None, "last_event_time": None, "version": "empty"}}


def build_snapshot(metadata: dict, primary: pd.DataFrame, actions: pd.DataFrame,
                   outages: pd.DataFrame, *, frame_nm: float | None,
                   radius_nm: dict[str, float]) -> dict:
    """Everything the page shows of one run: status, latest image, chart, map, actions.

    Parameters
    ----------
    metadata
        The run's metadata (start, stop if ended, corrections).
    primary, actions, outages
        The run's tables with `PRIMARY_COLUMNS`, `ACTION_COLUMNS`, `OUTAGE_COLUMNS` (device
        prefixes removed), one row per image, action, outage.
    frame_nm
        The frame side, if the run recorded it.
    radius_nm
        Forbidden radius of each action, by name (drawn around its site).
    """
    start, stop = metadata["start"], metadata.get("stop")
    uid, n = start["uid"], len(primary)
    corrections = corrections_of(metadata)
    verdicts = primary["verdict"].astype(str).to_numpy()
    good = verdicts == "good"
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
        "last_good_time": float(primary["time"].to_numpy()[good][-1]) if good.any() else None,
        "corrections": len(corrections),
        "version": f"{uid}:{n}:{len(actions)}:{int(stop is not None)}:{len(corrections)}",
    }
    return {
        "status": status,
        "run": run_summary(metadata),
        "latest": latest,
        "verdicts": dict(zip(*np.unique(verdicts, return_counts=True), strict=True)),
        "area": area_map(start, primary, actions, frame_nm=frame_nm, radius_nm=radius_nm),
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
    most frequent verdict of each, ties to the first by name), with DeepSPM's threshold."""
    n = len(primary)
    width = max(1, math.ceil(n / CHART_POINTS))
    series = {"bin": width, "threshold": GOOD_TIP_THRESHOLD, "points": []}
    if not n:
        return series
    bins = np.arange(n) // width
    p_good = primary["p_good"].to_numpy(float)
    finite = np.isfinite(p_good)
    sums = np.bincount(bins, weights=np.where(finite, p_good, 0.0))
    counted = np.bincount(bins, weights=finite)
    names, codes = np.unique(primary["verdict"].astype(str).to_numpy(), return_inverse=True)
    tally = np.zeros((len(sums), len(names)), dtype=np.int64)
    np.add.at(tally, (bins, codes), 1)
    centres = np.arange(len(sums)) * width + (np.bincount(bins) - 1) / 2
    series["points"] = [
        [float(centre), round(total / count, 4) if count else None, str(name)]
        for centre, total, count, name in zip(centres, sums, counted,
                                              names[tally.argmax(axis=1)], strict=True)]
    return series


def area_map(start: dict, primary: pd.DataFrame, actions: pd.DataFrame, *,
             frame_nm: float | None, radius_nm: dict[str, float]) -> dict:
    """The current approach area: its frames (centre, verdict), action sites with their
    forbidden radius, and crashes."""
    area_nm = float((start.get("instrument") or {}).get("scan_range_nm") or DEFAULT_AREA_NM)
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


def recent_actions(actions: pd.DataFrame, primary: pd.DataFrame) -> list[dict]:
    """The last actions, newest first, each with the verdict of the next image after it."""
    recent = actions.tail(RECENT_ACTIONS).iloc[::-1]
    times = primary["time"].to_numpy(float)
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
