"""Export a run from Tiled to plain files: images as .npy, each stream's table as .csv; a
survey's images with their coordinates as one .npz; or the images sorted into ``good/`` and
``bad/`` folders by the verdict they were given, so that a person can move the misjudged ones
and fine-tune the classifier on them
(``deepspm-bluesky train-classifier --init pretrained --data FOLDER``).
Gwyddion files and contact sheets: `deepspm_bluesky.gwyddion`, `deepspm_bluesky.contact_sheet`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from .judging import GOOD_TIP_THRESHOLD

LABEL_FOLDERS = ("good", "bad")


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


def write_npz(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write a survey Dataset (`deepspm_bluesky.data.survey_dataset`) as one ``.npz``.

    Every variable and coordinate is an array of its name (``height`` (n, rows, cols) in
    metres, ``x``, ``y``, ``scan_x``, ``scan_y`` in metres, ``time``, ``verdict``, ...;
    strings as unicode arrays, so ``numpy.load`` needs no pickle) and ``attrs`` is the
    Dataset's attributes as JSON (frame size, bias, setpoint, uid, ...).
    """
    path = Path(path)
    arrays = {name: _plain(dataset[name].to_numpy())
              for name in [*dataset.data_vars, *dataset.coords]}
    np.savez_compressed(path, **arrays, attrs=np.array(json.dumps(dataset.attrs, default=str)))
    return path


def _plain(array: np.ndarray) -> np.ndarray:
    """Object arrays (strings) as unicode arrays: loadable without pickle."""
    return array.astype(str) if array.dtype == object else array


def export_labels(run, out: str | Path, *, threshold: float = GOOD_TIP_THRESHOLD,
                  stream_name: str = "primary",
                  labels: Mapping[int, str] | None = None) -> dict[str, list[Path]]:
    """Write each judged image of a run as ``good/<uid8>_<n>.npy`` or ``bad/<uid8>_<n>.npy``.

    Parameters
    ----------
    run
        A Bluesky run node of a Tiled client.
    out
        Folder to write into; ``good/`` and ``bad/`` are created in it.
    threshold
        P(good) at or above which an image goes to ``good/`` (DeepSPM's 0.9).
    stream_name
        The stream holding the images with their ``check`` and ``p_good`` decisions.
    labels
        A person's labels (``"good"``/``"bad"``) by image index: only these images are
        written, each into its label's folder, whatever the survey decided (the watch
        page's reviews, `deepspm_bluesky.watch.export_reviewed`).

    Returns
    -------
    dict
        ``{"good": [paths], "bad": [paths]}``. Images that failed a fast check (crash, no
        contact, debris) or were never classified (no finite ``p_good``) are left out:
        they judge the instrument, not the tip's imaging.

    Raises
    ------
    KeyError
        If the run has no such stream, or the stream no image or no ``p_good``.
    """
    out = Path(out)
    uid = run.metadata["start"]["uid"]
    if stream_name not in run:
        raise KeyError(f"run {uid[:8]} has no {stream_name!r} stream; it has {list(run)}")
    stream = run[stream_name]
    table = stream.base["internal"].read()
    if "p_good" not in table:
        raise KeyError(f"the {stream_name!r} stream of run {uid[:8]} records no p_good")
    written: dict[str, list[Path]] = {name: [] for name in LABEL_FOLDERS}
    for name in LABEL_FOLDERS:
        (out / name).mkdir(parents=True, exist_ok=True)
    if labels is not None:
        return _export_labelled(stream, uid, labels, out, written)
    images = _image_array(stream, uid)
    checks = table["check"] if "check" in table else [""] * len(table)
    for index, (p_good, check) in enumerate(zip(table["p_good"], checks, strict=True)):
        if not np.isfinite(p_good) or check not in ("", "ok"):
            continue
        name = "good" if p_good >= threshold else "bad"
        path = out / name / f"{uid[:8]}_{index:05d}.npy"
        np.save(path, np.asarray(images[index], dtype=np.float64))
        written[name].append(path)
    return written


def _export_labelled(stream, uid: str, labels: Mapping[int, str], out: Path,
                     written: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Write the labelled images only, each read on its own (never the whole stack)."""
    node = _image_node(stream, uid)
    for index, name in sorted(labels.items()):
        if name not in LABEL_FOLDERS:
            raise ValueError(f"image {index} of run {uid[:8]}: label must be good or bad, "
                             f"got {name!r}")
        path = out / name / f"{uid[:8]}_{index:05d}.npy"
        np.save(path, np.asarray(node[index], dtype=np.float64))
        written[name].append(path)
    return written


def _image_node(stream, uid: str):
    """The stream's stack of 2-D images (the one array field of three dimensions)."""
    for key in stream.base:
        if key != "internal" and len(stream.base[key].shape) == 3:
            return stream.base[key]
    raise KeyError(f"run {uid[:8]} records no image stack in this stream")


def _image_array(stream, uid: str) -> np.ndarray:
    """The whole stack of the stream's 2-D images."""
    return _image_node(stream, uid).read()
