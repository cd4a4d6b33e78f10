"""A survey as a Gwyddion ``.gwy`` file (``gwyfile``): one channel per image, in metres.

Gwyddion is what SPM users open data in. Each channel carries its physical frame (xreal,
yreal and offsets of the frame's corner, metres) and, as Gwyddion metadata, the bias,
setpoint, scan position, verdict and P(good) of its image.
"""

from __future__ import annotations

from pathlib import Path

import gwyfile
import numpy as np
import xarray as xr
from gwyfile.objects import GwyContainer, GwyDataField


def write_gwy(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write every image of `dataset` (`deepspm_bluesky.data.survey_dataset`) as a channel.

    Gwyddion draws row 0 at the top; the survey's row 0 is the lowest y, so rows are
    stored top first (`read_gwy` turns them back).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    size_m = float(dataset.attrs["frame_size_m"])
    container = GwyContainer()
    for index in range(dataset.sizes["image"]):
        frame = dataset.isel(image=index)
        heights = np.flipud(frame["height"].to_numpy()).astype(np.float64)
        container[f"/{index}/data"] = GwyDataField(
            np.ascontiguousarray(heights), xreal=size_m, yreal=size_m,
            xoff=float(frame["scan_x"]) - size_m / 2, yoff=float(frame["scan_y"]) - size_m / 2,
            si_unit_xy="m", si_unit_z="m")
        container[f"/{index}/data/title"] = _title(frame)
        meta = _metadata(dataset.attrs, frame)  # typed as strings, even one-letter ones
        container[f"/{index}/meta"] = GwyContainer(meta, typecodes=dict.fromkeys(meta, "s"))
    container.tofile(str(path))
    return path


def read_gwy(path: str | Path) -> list[tuple[np.ndarray, GwyDataField, dict[str, str]]]:
    """The channels of a ``.gwy`` file written by `write_gwy`, in order.

    Returns
    -------
    list
        ``(heights, field, metadata)`` per channel: heights in metres with row 0 at the
        lowest y again, the `GwyDataField` (``xreal``, ``xoff``, ...), its metadata strings.
    """
    container = gwyfile.load(str(path))
    channels = sorted(number for number, _ in gwyfile.util.find_datafields(container))
    result = []
    for number in channels:
        field = container[f"/{number}/data"]
        meta = dict(container.get(f"/{number}/meta", {}))
        result.append((np.flipud(field.data), field, meta))
    return result


def _title(frame: xr.Dataset) -> str:
    verdict = str(frame["verdict"].item()) if "verdict" in frame else "unjudged"
    return f"image {int(frame['image'])}: {verdict}"


def _metadata(attrs: dict, frame: xr.Dataset) -> dict[str, str]:
    """Gwyddion metadata of one image: strings, units spelt out."""
    meta = {"Scan x (m)": f"{float(frame['scan_x']):.6e}",
            "Scan y (m)": f"{float(frame['scan_y']):.6e}",
            "Time": str(np.datetime_as_string(frame["time"].to_numpy(), unit="ms"))}
    if "bias_v" in attrs:
        meta["Bias (V)"] = f"{attrs['bias_v']:g}"
    if "setpoint_a" in attrs:
        meta["Setpoint (A)"] = f"{attrs['setpoint_a']:g}"
    for name in ("verdict", "check", "p_good"):
        if name in frame:
            meta[name] = f"{frame[name].item():.4f}" if name == "p_good" \
                else str(frame[name].item())
    for name in ("uid", "sample", "operator", "backend", "mode"):
        if name in attrs:
            meta[name] = str(attrs[name])
    return meta
