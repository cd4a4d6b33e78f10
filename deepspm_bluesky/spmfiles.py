"""Readers of real SPM files: Nanonis ``.sxm`` topographs, in our units and row order.

Our row order (that of the simulator, of the `STM` device's images and of every image in a
run): row 0 is the line at the lowest y of the frame, rows advance along +y, and column 0 is
at the lowest x, in the frame's own axes (a rotated frame stays rotated). That is the order in
which an upward scan records its forward lines, and the Nanonis backend scans upwards.

A Nanonis ``.sxm`` file is an ASCII header (``:KEY:`` lines, each followed by its value
lines) ending with ``:SCANIT_END:``, then the bytes ``\\x1a\\x04`` and the data: float32 in
the byte order of ``:SCANIT_TYPE:``, channel after channel in the order of ``:DATA_INFO:``,
forward then backward for a channel recorded ``both`` ways, each frame ``lines`` x
``pixels`` in the order the lines were recorded. So a ``down`` scan starts at the top (its
rows are flipped here) and a backward line runs from right to left (its columns are flipped).
Lines never recorded (an aborted scan) are NaN.

Checked against a real file, the Nanonis STM example shipped by ``pynxtools-spm`` 0.4.1
(256 x 256 px, 4 nm, a ``down`` scan at constant height, -50 mV / 25 pA;
``tests/test_spmfiles.py``):

- Z is signal slot 14 (its ``DATA_INFO`` row), as the Nanonis backend assumes, and its block
  comes first: every pixel equals the header's ``Z-Controller>Z (m)`` (-6.07579 nm; the
  controller was off), so the data are in metres, uncalibrated by us.
- Backward lines are stored right to left: turned, they correlate with the forward lines at
  0.986 (0.80 unturned) in the Current channel.
- Lines are stored in the order recorded: the last stored line's mean current (-28.6 pA) is
  nearer the current read when the file was saved (-29.0 pA) than the first line's (-26.5 pA).
  This agrees with the format description below, but a single file cannot prove it.
- The Nanonis backend grabs frames whose rows a fake controller serves in that stored order
  with the direction word of the file, and returns exactly this reader's image
  (``tests/test_nanonis.py``).

References
----------
Nanonis SXM file format, as described for gxsm: https://sourceforge.net/p/gxsm/plugin-requests/3/
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

END_OF_HEADER = b":SCANIT_END:"
DATA_START = b"\x1a\x04"
_KEY = re.compile(r"^:(.+):$")
_BYTE_ORDER = {"MSBFIRST": ">", "LSBFIRST": "<"}


@dataclass(frozen=True)
class SxmChannel:
    """One recorded signal of a scan: its Nanonis signal slot, name, unit and directions."""

    slot: int
    name: str
    unit: str
    directions: tuple[str, ...]  # ("forward", "backward") or ("forward",)


@dataclass(frozen=True)
class SxmScan:
    """A Nanonis scan read from an ``.sxm`` file.

    Attributes
    ----------
    path
        The file.
    z_m
        The forward Z (topography) image in metres, shape (lines, pixels), our row order.
    frame_size_m
        (width, height) of the scan frame.
    pixel_size_m
        (x, y) side of a pixel.
    centre_m
        (x, y) centre of the frame.
    angle_deg
        Rotation of the frame.
    bias_v
        Sample bias.
    setpoint_a
        Z-controller setpoint (A), None if the controller does not regulate a current.
    z_controller_on
        False for a constant-height image: Z is then flat and the contrast is in the current.
    scan_direction
        ``"up"`` or ``"down"``: the direction the lines advanced while recording.
    channels
        The recorded channels, in the order of the file.
    header
        Every header entry, as text.
    """

    path: Path
    z_m: np.ndarray = field(repr=False)
    frame_size_m: tuple[float, float]
    pixel_size_m: tuple[float, float]
    centre_m: tuple[float, float]
    angle_deg: float
    bias_v: float
    setpoint_a: float | None
    z_controller_on: bool
    scan_direction: str
    channels: tuple[SxmChannel, ...]
    header: dict[str, str] = field(repr=False)
    _frames: dict[tuple[str, str], np.ndarray] = field(repr=False)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(channel.name for channel in self.channels)

    @property
    def complete(self) -> bool:
        """True when every line was recorded (an aborted scan leaves NaN lines)."""
        return bool(np.isfinite(self.z_m).all())

    def image(self, name: str, direction: str = "forward") -> np.ndarray:
        """A channel's image in its unit (SI), our row order; backward lines turned left-to-right.

        Raises
        ------
        KeyError
            Naming the channels and directions the file has.
        """
        try:
            return self._frames[(name, direction)]
        except KeyError:
            raise KeyError(f"{self.path.name} has no {direction} {name!r} image; it has "
                           f"{sorted(self._frames)}") from None


def read_sxm(path: str | Path) -> SxmScan:
    """Read a Nanonis ``.sxm`` scan: Z in metres, in our row order, with its scan settings.

    Parameters
    ----------
    path
        The ``.sxm`` file.

    Returns
    -------
    SxmScan
        ``scan.z_m`` is the forward topograph (lines x pixels, float32, metres; row 0 at the
        lowest y). ``scan.image(name, direction)`` gives any channel.

    Raises
    ------
    ValueError
        Naming the file and what is wrong: no header end, no Z channel, sizes that do not add
        up to the file's length.

    Examples
    --------
    >>> scan = read_sxm("Au_mica_058.sxm")                         # doctest: +SKIP
    >>> scan.z_m.shape, scan.frame_size_m, scan.scan_direction      # doctest: +SKIP
    ((256, 256), (4e-09, 4e-09), 'down')
    """
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(END_OF_HEADER)
    start = raw.find(DATA_START, end)
    if end < 0 or start < 0:
        raise ValueError(f"{path}: not a Nanonis .sxm file (no {END_OF_HEADER.decode()} "
                         "followed by the data marker)")
    header = _parse_header(raw[:end].decode("latin-1"))
    try:
        pixels, lines = (int(v) for v in header["SCAN_PIXELS"].split())
        channels = _channels(header["DATA_INFO"])
        direction = header["SCAN_DIR"].strip().lower()
        number_type, byte_order = header["SCANIT_TYPE"].split()
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: header entry missing or unreadable: {exc}") from None
    if number_type != "FLOAT" or byte_order not in _BYTE_ORDER:
        raise ValueError(f"{path}: data type {header['SCANIT_TYPE']!r} is not FLOAT "
                         "MSBFIRST/LSBFIRST")
    frames = _frames(raw[start + len(DATA_START):], channels, lines, pixels,
                     _BYTE_ORDER[byte_order] + "f4", direction, path)
    if ("Z", "forward") not in frames:
        raise ValueError(f"{path}: no forward Z channel; channels: "
                         f"{[c.name for c in channels]}")
    width, height = _floats(header["SCAN_RANGE"])
    x, y = _floats(header["SCAN_OFFSET"])
    controller = _z_controller(header.get("Z-CONTROLLER", ""))
    return SxmScan(
        path=path, z_m=frames[("Z", "forward")], frame_size_m=(width, height),
        pixel_size_m=(width / pixels, height / lines), centre_m=(x, y),
        angle_deg=float(header.get("SCAN_ANGLE", "0")), bias_v=float(header["BIAS"]),
        setpoint_a=controller.get("setpoint_a"),
        z_controller_on=controller.get("on", True), scan_direction=direction,
        channels=channels, header=header, _frames=frames)


def to_our_row_order(recorded: np.ndarray, scan_direction: str, *,
                     backward: bool = False) -> np.ndarray:
    """Turn a frame stored line by line as recorded into our row order.

    Parameters
    ----------
    recorded
        (lines, pixels), row 0 the first line recorded, each line in the tip's direction.
    scan_direction
        ``"up"`` (lines advance along +y: nothing to flip) or ``"down"`` (rows flipped).
    backward
        True for the backward pass (columns flipped, the tip ran from right to left).

    Examples
    --------
    >>> to_our_row_order(np.array([[1, 2], [3, 4]]), "down").tolist()
    [[3, 4], [1, 2]]
    """
    if scan_direction not in ("up", "down"):
        raise ValueError(f"scan direction must be 'up' or 'down', got {scan_direction!r}")
    frame = recorded[::-1] if scan_direction == "down" else recorded
    return frame[:, ::-1] if backward else frame


# -- header ---------------------------------------------------------------------------------
def _parse_header(text: str) -> dict[str, str]:
    """``:KEY:`` lines and the value lines under each; values keep inner line breaks."""
    header: dict[str, str] = {}
    key, lines = None, []
    for line in text.splitlines():
        match = _KEY.match(line.rstrip())
        if match:
            if key is not None:
                header[key] = "\n".join(lines).strip("\n")
            key, lines = match.group(1), []
        elif key is not None:
            lines.append(line)
    if key is not None:
        header[key] = "\n".join(lines).strip("\n")
    return header


def _table(text: str) -> list[dict[str, str]]:
    """Rows of a tab-separated header table (first line: column names)."""
    rows = [line.strip("\t").split("\t") for line in text.splitlines() if line.strip()]
    if not rows:
        return []
    names = [name.strip() for name in rows[0]]
    return [dict(zip(names, (cell.strip() for cell in row), strict=False)) for row in rows[1:]]


def _channels(data_info: str) -> tuple[SxmChannel, ...]:
    channels = []
    for row in _table(data_info):
        both = row["Direction"].lower() == "both"
        channels.append(SxmChannel(slot=int(row["Channel"]), name=row["Name"], unit=row["Unit"],
                                   directions=("forward", "backward") if both else ("forward",)))
    if not channels:
        raise ValueError("DATA_INFO lists no channel")
    return tuple(channels)


def _z_controller(text: str) -> dict:
    """``on`` and ``setpoint_a`` from the Z-CONTROLLER table (setpoint only for amperes)."""
    rows = _table(text)
    if not rows:
        return {}
    row, info = rows[0], {}
    if "on" in row:
        info["on"] = row["on"] not in ("0", "FALSE", "OFF")
    value, _, unit = row.get("Setpoint", "").partition(" ")
    if unit.strip() == "A":
        info["setpoint_a"] = float(value)
    return info


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def _frames(data: bytes, channels: tuple[SxmChannel, ...], lines: int, pixels: int, dtype: str,
            direction: str, path: Path) -> dict[tuple[str, str], np.ndarray]:
    count = sum(len(c.directions) for c in channels)
    expected = count * lines * pixels * 4
    if len(data) < expected:
        raise ValueError(f"{path}: {count} frames of {lines} x {pixels} float32 need {expected}"
                         f" bytes of data, the file has {len(data)}")
    values = np.frombuffer(data, dtype, count * lines * pixels).reshape(count, lines, pixels)
    frames, index = {}, 0
    for channel in channels:
        for way in channel.directions:
            frame = to_our_row_order(values[index], direction, backward=way == "backward")
            frames[(channel.name, way)] = np.ascontiguousarray(frame, dtype=np.float32)
            index += 1
    return frames
