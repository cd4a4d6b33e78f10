"""Finding surveys in a catalog, and one survey's images as an xarray Dataset.

Searches run as Tiled queries on the start documents (in SQLite or PostgreSQL), so a
catalog of thousands of runs is never read whole to find a few.

Examples
--------
>>> from deepspm_bluesky.data import open_catalog, list_surveys, survey_dataset
>>> catalog = open_catalog("./my-catalog")                    # doctest: +SKIP
>>> list_surveys(catalog, sample="Ag(100)", since="2026-11-01")  # doctest: +SKIP
>>> survey_dataset(catalog[-1]).height.sel(image=3)           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import xarray as xr
from tiled.queries import Key

SURVEY_PLAN = "autonomous_survey"
# the start-document key of each search criterion (plans/survey.py, the CLI's --sample, --md)
CRITERIA = {
    "mode": "start.plan_args.mode",
    "backend": "start.instrument.backend",
    "sample": "start.sample",
    "operator": "start.operator",
}
DECISIONS = ("check", "verdict", "p_good", "familiar")
NM = 1e-9


def search_surveys(catalog, *, date: str | dt.date | None = None,
                   since: str | dt.date | dt.datetime | None = None,
                   until: str | dt.date | dt.datetime | None = None,
                   mode: str | None = None, backend: str | None = None,
                   sample: str | None = None, operator: str | None = None):
    """The catalog's surveys that match every criterion given, as a Tiled node.

    Parameters
    ----------
    catalog
        A Tiled client (`deepspm_bluesky.data.open_catalog`).
    date
        The survey started on this day (local time): ``"2026-11-25"`` or a `datetime.date`.
    since, until
        The survey started at or after `since` and before `until` (a day as `until` counts
        whole); ISO strings, dates or datetimes, naive ones in local time.
    mode, backend, sample, operator
        Equal to the start document's ``plan_args.mode``, ``instrument.backend``,
        ``sample``, ``operator`` (the CLI sets the last two with ``--sample`` and
        ``--md operator=...``).

    Returns
    -------
    Tiled node
        Searchable further, indexable by uid or position (``[-1]`` the latest).
    """
    node = catalog.search(Key("start.plan_name") == SURVEY_PLAN)
    if date is not None:
        since, until = _day(date), _day(date)
    if since is not None:
        node = node.search(Key("start.time") >= _epoch(since, end_of_day=False))
    if until is not None:
        node = node.search(Key("start.time") < _epoch(until, end_of_day=True))
    given = {"mode": mode, "backend": backend, "sample": sample, "operator": operator}
    for name, value in given.items():
        if value is not None:
            node = node.search(Key(CRITERIA[name]) == value)
    return node


def list_surveys(catalog, **criteria) -> pd.DataFrame:
    """One row per matching survey (see `search_surveys` for `criteria`), oldest first.

    Columns: uid, scan_id, start (local time), mode, backend, sample, operator, images,
    exit_status and reason (None while a survey runs).
    """
    rows = []
    for uid, run in search_surveys(catalog, **criteria).items():
        start, stop = run.metadata["start"], run.metadata.get("stop") or {}
        rows.append({
            "uid": uid, "scan_id": start.get("scan_id"),
            "start": dt.datetime.fromtimestamp(start["time"]),
            "mode": start.get("plan_args", {}).get("mode"),
            "backend": start.get("instrument", {}).get("backend"),
            "sample": start.get("sample"), "operator": start.get("operator"),
            "images": stop.get("num_events", {}).get("primary", 0),
            "exit_status": stop.get("exit_status"), "reason": stop.get("reason"),
        })
    columns = ["uid", "scan_id", "start", "mode", "backend", "sample", "operator", "images",
               "exit_status", "reason"]
    return pd.DataFrame(rows, columns=columns)


def _day(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def _epoch(value: str | dt.date | dt.datetime, *, end_of_day: bool) -> float:
    """Seconds since the epoch of a bound; a bare date is its day's start (or next day's)."""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value + dt.timedelta(days=int(end_of_day)), dt.time())
    return value.timestamp()


def survey_dataset(run, *, stream_name: str = "primary") -> xr.Dataset:
    """A survey's images with their positions and decisions, in metres.

    Parameters
    ----------
    run
        A run node of a Tiled client (``catalog[uid]``).
    stream_name
        The stream with the images and their decisions.

    Returns
    -------
    xarray.Dataset
        ``height`` (image, y, x) in metres, row 0 at the lowest y; per image ``check``,
        ``verdict``, ``p_good``, ``familiar`` and coordinates ``time``, ``scan_x``,
        ``scan_y`` (frame centres, m); ``x``, ``y`` the pixel centres from the frame
        centre (m). Attributes: uid, scan_id, frame_size_m, pixels, bias_v, setpoint_a,
        mode, backend, sample, operator (those the run has).

    Raises
    ------
    KeyError
        If the run has no such stream, or it records no images.
    """
    start = run.metadata["start"]
    uid = start["uid"]
    if stream_name not in run:
        raise KeyError(f"run {uid[:8]} has no {stream_name!r} stream; it has {list(run)}")
    stream = run[stream_name]
    device = (start.get("detectors") or ["stm"])[0]
    if f"{device}_image" not in stream.base:
        raise KeyError(f"the {stream_name!r} stream of run {uid[:8]} records no "
                       f"{device}_image")
    config = stream.metadata["configuration"][device]["data"]
    size_m = float(config[f"{device}_scanner_size_nm"]) * NM
    table = stream.base["internal"].read()
    heights = stream.base[f"{device}_image"].read()
    rows, cols = heights.shape[1:]
    data = {name: ("image", table[name].to_numpy()) for name in DECISIONS if name in table}
    data["height"] = (("image", "y", "x"), heights, {"units": "m"})
    return xr.Dataset(data, coords={
        "image": np.arange(len(table)),
        "time": ("image", pd.to_datetime(table["time"], unit="s").to_numpy()),
        "scan_x": ("image", table[f"{device}_scanner_x_nm"].to_numpy() * NM, {"units": "m"}),
        "scan_y": ("image", table[f"{device}_scanner_y_nm"].to_numpy() * NM, {"units": "m"}),
        "x": ("x", _pixel_centres(cols, size_m), {"units": "m"}),
        "y": ("y", _pixel_centres(rows, size_m), {"units": "m"}),
    }, attrs=_survey_attrs(start, config, device, size_m, cols))


def _pixel_centres(count: int, size_m: float) -> np.ndarray:
    """Pixel centres of a frame of side `size_m`, measured from the frame centre."""
    return (np.arange(count) + 0.5 - count / 2) * (size_m / count)


def _survey_attrs(start: dict, config: dict, device: str, size_m: float, pixels: int) -> dict:
    attrs = {"uid": start["uid"], "scan_id": start.get("scan_id"), "frame_size_m": size_m,
             "pixels": pixels, "bias_v": config.get(f"{device}_bias"),
             "setpoint_a": config.get(f"{device}_current"),
             "mode": start.get("plan_args", {}).get("mode"),
             "backend": start.get("instrument", {}).get("backend"),
             "sample": start.get("sample"), "operator": start.get("operator")}
    return {key: value for key, value in attrs.items() if value is not None}
