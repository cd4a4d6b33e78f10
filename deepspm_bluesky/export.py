"""Export a run from Tiled to plain files: images as .npy, each stream's table as .csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def export_run(run, out: str | Path) -> list[Path]:
    """Write `<uid>_<stream>.csv` per stream, `<uid>_<key>.npy` per image array, and metadata.

    Parameters
    ----------
    run
        A Bluesky run node of a Tiled client (e.g. ``open_catalog(dir)[uid]``).
    out
        Folder to write into (created if missing).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    uid = run.metadata["start"]["uid"]
    written = [out / f"{uid}_metadata.json"]
    written[0].write_text(json.dumps(
        {"start": run.metadata["start"], "stop": run.metadata.get("stop")}, indent=1, default=str))
    for stream_name in run:
        stream = run[stream_name]
        table = stream.base["internal"].read()
        path = out / f"{uid}_{stream_name}.csv"
        table.to_csv(path, index=False)
        written.append(path)
        for key in stream.base:
            if key != "internal":
                path = out / f"{uid}_{stream_name}_{key}.npy"
                np.save(path, stream.base[key].read())
                written.append(path)
    return written
