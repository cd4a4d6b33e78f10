"""Backend for Nanonis controllers over TCP, on the official `nanonis-spm` package.

`nanonis_spm.Nanonis` builds and parses the messages; this module gives it a socket that reads
exactly the announced bytes within a deadline, checks every error section, and converts the
backend's calls into Nanonis commands (all in SI units: m, V, A, s; Nanonis timeouts in ms).
The connection policy is `transport.Link`'s: reads are re-asked through outages of up to
`outage_s`; the commands that act on the tip (Bias.Pulse, TipShaper.Start,
AutoApproach.OnOffSet, Motor.StartMove) are sent at most once, and an operation whose reply is
lost after one of them raises `OutcomeUnknown` (the commands before it, e.g. moving the tip to
the spot, are safe to repeat and are).

Mapping of the backend calls (commands from the Nanonis TCP programming interface):

- ``scan``: Scan.BufferSet (pixels, once per size), Scan.FrameSet, Scan.Action (start),
  Scan.WaitEndOfScan (timeout from the frame and the tip speed), Scan.FrameDataGrab of the Z
  channel (forward), its rows put in our order from the scan direction it reports
  (`deepspm_bluesky.spmfiles.to_our_row_order`, the convention of the .sxm files).
- ``condition``: FolMe.XYPosSet to the spot, then Bias.Pulse (pulse) or TipShaper.PropsSet
  + TipShaper.Start (dip); a stall sends nothing.
- ``tip_clean``: a tip-shaper dip of `clean_dip_m` (10 nm by default) at the spot.
- ``approach``: AutoApproach.Open, AutoApproach.OnOffSet(1), poll AutoApproach.OnOffGet,
  ZCtrl.OnOffSet(1); ``withdraw``: ZCtrl.Withdraw.
- ``move_area``: withdraw, Motor.StartMove (Y+, `coarse_steps`), approach; reports 0 crashes
  (the controller cannot tell).
- ``scan_range_m``/``z_range_m``: Piezo.RangeGet; ``set_bias``: Bias.Set;
  ``set_setpoint``: ZCtrl.SetpntSet; ``set_scan_speed``/``scan_speed_m_s`` (the optional
  `ScanSpeedControl`): Scan.SpeedSet/Scan.SpeedGet, linear speed kept constant.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from nanonis_spm import Nanonis

from deepspm_bluesky.actions import Action
from deepspm_bluesky.spmfiles import to_our_row_order

from .backend import SCAN_TIMEOUT_MARGIN_S, LinkedBackend
from .stm import STM
from .transport import (
    DEFAULT_OUTAGE_S,
    RETRY_DELAY_S,
    InstrumentError,
    Link,
    MalformedReply,
    TCPConnection,
)

T = TypeVar("T")

# Seconds allowed for each kind of operation (an approach takes minutes); a scan's follows its
# frame (`backend.scan_timeout_s`) unless a fixed "scan" timeout is given.
DEFAULT_TIMEOUTS_S = {
    "command": 10.0, "condition": 120.0, "approach": 900.0, "move_area": 3600.0,
}
TIMEOUT_KINDS = ("scan", *DEFAULT_TIMEOUTS_S)
# Commands that act on the tip or the sample: sent at most once.
ACTING_COMMANDS = ("Bias_Pulse", "TipShaper_Start", "AutoApproach_OnOffSet", "Motor_StartMove")
SLACK_S = 2.0  # the socket waits this much longer than the controller-side timeouts
Z_CHANNEL = 14  # signal slot of Z in the scan buffer (so in a real .sxm: tests/test_spmfiles.py)
DIRECTION_Y_PLUS = 2
SCAN_START, SCAN_STOP = 0, 1
SCAN_DIRECTIONS = {1: "up", 0: "down"}  # direction words of Scan.Action and Scan.FrameDataGrab
SCAN_WORDS = {name: word for word, name in SCAN_DIRECTIONS.items()}
FORWARD = 1
ON, OFF = 1, 0
HOLD_Z, ABSOLUTE = 1, 2
KEEP_LINEAR_SPEED = 1
TIP_SHAPER_SETTLE_S = 0.05


class LibrarySocket:
    """The socket `nanonis_spm.Nanonis` is given: exact reads, deadlines, lazy reconnects.

    The library calls ``send``, ``recv(n)`` (expecting n bytes; ``recv(0)`` when done) and
    ``settimeout`` (it sets 1000 s after every reply; ignored: `deadline` rules instead).
    """

    def __init__(self, connection: TCPConnection) -> None:
        self.connection = connection
        self.deadline = math.inf
        self.command = "nanonis"

    def send(self, data: bytes) -> int:
        self.command = data[:32].rstrip(b"\0").decode("ascii", errors="replace")
        self.connection.sendall(bytes(data), self.deadline, self.command)
        return len(data)

    def recv(self, n: int) -> bytes:
        return self.connection.recv_exactly(n, self.deadline, self.command) if n > 0 else b""

    def settimeout(self, timeout: float | None) -> None:
        """Ignored: the library's 1000 s would override the per-operation deadline."""

    def close(self) -> None:
        self.connection.close()


class NanonisBackend(LinkedBackend):
    """The STM backend calls as Nanonis TCP commands.

    Parameters
    ----------
    host, port
        The Nanonis TCP interface (enable it under System > Options > TCP Programming
        Interface; 6501 is its first port).
    z_channel
        Signal slot of Z (m) in the scan buffer.
    outage_s
        How long a lost connection is re-tried before the backend gives up.
    timeouts_s
        Per operation kind (``command``, ``scan``, ``condition``, ``approach``,
        ``move_area``), merged over `DEFAULT_TIMEOUTS_S`; a ``scan`` entry replaces the
        timeout computed from the frame.
    retries
        How often a reply that did not come in time is asked for again (reads only).
    retry_delay_s
        First pause before re-opening a lost connection (it doubles, up to 2 s).
    coarse_steps
        Motor steps of one move to a fresh approach area.
    clean_dip_m
        Tip-shaper depth (negative, m) of the heavy cleaning after a crash.
    approach_poll_s
        Interval between checks of a running auto-approach.
    slack_s
        How much longer than an operation's timeout the socket waits for a reply (the
        controller enforces the timeouts of waiting commands itself).
    scan_margin_s
        Time a scan may take beyond twice its duration at the tip speed (settling, drift
        waits): the scan timeout is ``2 * lines * 2 * size / speed + scan_margin_s``.
    scan_direction
        ``"up"`` or ``"down"``: the direction the lines advance (the image comes out in our row
        order either way, oriented by the direction word of the grabbed frame).
    connect_timeout_s
        Limit on opening a connection.
    """

    def __init__(self, host: str, port: int, *, z_channel: int = Z_CHANNEL,
                 outage_s: float = DEFAULT_OUTAGE_S, timeouts_s: dict[str, float] | None = None,
                 retries: int = 3, retry_delay_s: float = RETRY_DELAY_S,
                 coarse_steps: int = 200, clean_dip_m: float = -10e-9,
                 approach_poll_s: float = 0.5, slack_s: float = SLACK_S,
                 scan_margin_s: float = SCAN_TIMEOUT_MARGIN_S, scan_direction: str = "up",
                 connect_timeout_s: float = 5.0) -> None:
        unknown = set(timeouts_s or {}) - set(TIMEOUT_KINDS)
        if unknown:
            raise ValueError(f"unknown operation kinds {sorted(unknown)}; known: "
                             f"{sorted(TIMEOUT_KINDS)}")
        if clean_dip_m >= 0:
            raise ValueError(f"clean_dip_m must be negative (towards the sample), got "
                             f"{clean_dip_m}")
        self.timeouts_s = {**DEFAULT_TIMEOUTS_S, **(timeouts_s or {})}
        self.z_channel, self.coarse_steps, self.clean_dip_m = z_channel, coarse_steps, clean_dip_m
        self.approach_poll_s, self.slack_s = approach_poll_s, slack_s
        self.scan_margin_s = scan_margin_s
        if scan_direction not in SCAN_WORDS:
            raise ValueError(f"scan_direction must be 'up' or 'down', got {scan_direction!r}")
        self._scan_word = SCAN_WORDS[scan_direction]
        self.link = Link(host, port, outage_s=outage_s, retries=retries,
                         retry_delay_s=retry_delay_s, connect_timeout_s=connect_timeout_s)
        self.connection = self.link.connection
        self._socket = LibrarySocket(self.connection)
        self.nanonis = Nanonis(self._socket)
        self._pixels: int | None = None
        self._piezo_m: tuple[float, float, float] | None = None

    def instrument_metadata(self) -> dict:
        """Backend, address, Z channel and the piezo ranges the controller reported."""
        info = {"backend": "nanonis", "host": self.connection.host,
                "port": self.connection.port, "protocol": "Nanonis TCP",
                "z_channel": self.z_channel, "outage_s": self.link.outage_s}
        if self._piezo_m is not None:
            info["reported_piezo_range_m"] = list(self._piezo_m)
        return info

    def command(self, method: str, *args: Any, kind: str = "command") -> list:
        """Any `nanonis_spm.Nanonis` method by name, with this backend's deadlines and retries.

        Examples
        --------
        >>> backend.command("Scan_StatusGet")  # doctest: +SKIP
        [0]
        """
        return self._operation(method.replace("_", ".", 1), kind,
                               lambda _: self._call(method, *args),
                               acting=method in ACTING_COMMANDS)

    # -- backend interface ---------------------------------------------------------------
    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """A (pixels, pixels) float32 image of Z in metres; never a partial one."""
        def work(timeout_s: float) -> np.ndarray:
            self._set_pixels(pixels)
            self._call("Scan_FrameSet", x_m, y_m, size_m, size_m, 0.0)
            self._call("Scan_Action", SCAN_START, self._scan_word)
            timed_out = self._call("Scan_WaitEndOfScan", _ms(timeout_s))[0]
            if timed_out:
                self._call("Scan_Action", SCAN_STOP, self._scan_word)
                raise TimeoutError(f"Scan.WaitEndOfScan: no end of scan within {timeout_s} s")
            return self._grab_z(pixels)

        label = f"scan of {pixels} px, {size_m} m at ({x_m}, {y_m}) m"
        return self._operation(label, "scan", work, timeout_s=self.scan_timeout_s(size_m, pixels))

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Pulse (Bias.Pulse) or dip (tip shaper) at (x, y); a stall sends nothing."""
        if action.kind == "stall":
            return

        def work(timeout_s: float) -> None:
            self._call("FolMe_XYPosSet", x_m, y_m, ON)
            if action.kind == "pulse":
                self._call("Bias_Pulse", ON, action.duration_s, action.bias_v, HOLD_Z, ABSOLUTE)
            else:
                self._tip_shaper(action.dip_nm * 1e-9, action.bias_v, action.duration_s,
                                 timeout_s)

        self._operation(f"{action.kind} {action.name!r} at ({x_m}, {y_m}) m", "condition", work,
                        acting=True)

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """Heavy cleaning at (x, y): a tip-shaper dip of `clean_dip_m`; True when done."""
        def work(timeout_s: float) -> bool:
            self._call("FolMe_XYPosSet", x_m, y_m, ON)
            self._tip_shaper(self.clean_dip_m, 0.02, 0.5, timeout_s)
            return True

        return self._operation(f"tip clean at ({x_m}, {y_m}) m", "condition", work, acting=True)

    def approach(self) -> None:
        """Auto-approach until it stops, then switch the z controller on."""
        self._operation("auto-approach", "approach", self._approach, acting=True)

    def withdraw(self) -> None:
        """Switch the z controller off and retract the tip fully."""
        self._operation("withdraw", "command", self._withdraw)

    def move_area(self) -> int:
        """Withdraw, step the coarse motor Y+, approach; 0 crashes (Nanonis cannot tell)."""
        def work(timeout_s: float) -> int:
            self._withdraw(timeout_s)
            self._call("Motor_StartMove", DIRECTION_Y_PLUS, self.coarse_steps, 0, ON)
            self._approach(timeout_s)
            return 0

        return self._operation("coarse move to a new approach area", "move_area", work,
                               acting=True)

    def scan_range_m(self) -> float:
        """Side of the X piezo range in m."""
        return self._piezo_range()[0]

    def z_range_m(self) -> float:
        """The Z piezo range in m."""
        return self._piezo_range()[2]

    def set_bias(self, bias_v: float) -> None:
        """Imaging bias in V."""
        self._operation(f"bias {bias_v} V", "command",
                        lambda _: self._call("Bias_Set", float(bias_v)))

    def set_setpoint(self, current_a: float) -> None:
        """Z-controller (current) setpoint in A."""
        self._operation(f"setpoint {current_a} A", "command",
                        lambda _: self._call("ZCtrl_SetpntSet", float(current_a)))

    def set_scan_speed(self, speed_m_s: float) -> None:
        """Tip speed along a line, forward and backward, in m/s (scan timeouts follow it)."""
        self.use_scan_speed(speed_m_s)
        self._operation(f"scan speed {speed_m_s} m/s", "command", lambda _: self._call(
            "Scan_SpeedSet", float(speed_m_s), float(speed_m_s), 0.0, 0.0, KEEP_LINEAR_SPEED,
            1.0))

    @property
    def scan_speed_m_s(self) -> float:
        """The controller's forward tip speed along a line, in m/s (asked each time)."""
        values = self._operation("scan speed", "command", lambda _: self._call("Scan_SpeedGet"))
        return _float32_value(values[0])

    # -- commands ------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> list:
        """Run one `nanonis_spm.Nanonis` method inside an operation; its values or an error."""
        command = method.replace("_", ".", 1)
        if method in ACTING_COMMANDS:
            self.connection.open()  # a refused connection is retried, even in an act
            self.link.mark_sent()
        try:
            result = getattr(self.nanonis, method)(*args)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            raise MalformedReply(f"{command}: the reply could not be decoded ({exc})") from None
        if not result:
            raise MalformedReply(f"{command}: the reply was for another command")
        error, _, values = result
        if error:
            raise InstrumentError(f"{command}{args}: the controller reported {error!r}")
        return values

    def _operation(self, label: str, kind: str, work: Callable[[float], T], *,
                   acting: bool = False, timeout_s: float | None = None) -> T:
        """Run `work(timeout_s)` under the deadline of `kind` and the link's policy.

        In an `acting` operation, the acting commands (`ACTING_COMMANDS`) are sent at most
        once; a network error before them retries the whole operation.
        """
        timeout_s = self.timeouts_s[kind] if timeout_s is None else timeout_s

        def attempt() -> T:
            self._socket.deadline = time.monotonic() + timeout_s + self.slack_s
            return work(timeout_s)

        return (self.link.act if acting else self.link.read)(label, attempt)

    def _piezo_range(self) -> tuple[float, float, float]:
        x, y, z = self._operation("piezo range", "command", lambda _: self._call("Piezo_RangeGet"))
        if not all(math.isfinite(v) and v > 0 for v in (x, y, z)):
            raise MalformedReply(f"Piezo.RangeGet: ranges must be positive, got {(x, y, z)}")
        self._piezo_m = (_float32_value(x), _float32_value(y), _float32_value(z))
        return self._piezo_m

    def _set_pixels(self, pixels: int) -> None:
        """Set the scan buffer to `pixels` x `pixels` unless it already is.

        The buffer lives in the controller and survives reconnections, so it is set once
        per size; a frame of another size is still caught when it is grabbed.
        """
        if self._pixels == pixels:
            return
        _, channels, _, _ = self._call("Scan_BufferGet")
        slots = [int(c[0]) for c in channels]
        if self.z_channel not in slots:
            slots.append(self.z_channel)
        self._call("Scan_BufferSet", slots, int(pixels), int(pixels))
        _, _, got_pixels, got_lines = self._call("Scan_BufferGet")
        if (got_pixels, got_lines) != (pixels, pixels):
            raise InstrumentError(f"Scan.BufferSet: asked for {pixels} x {pixels} px, the "
                                  f"controller set {got_pixels} x {got_lines} (Nanonis rounds "
                                  "pixels to a multiple of 16)")
        self._pixels = pixels

    def _grab_z(self, pixels: int) -> np.ndarray:
        """Scan.FrameDataGrab of Z, forward; the float32 array is decoded with numpy."""
        body = self.nanonis.send("Scan.FrameDataGrab", [self.z_channel, FORWARD], ["I", "I"])
        if isinstance(body, list):  # the library's answer to a reply naming another command
            raise MalformedReply("Scan.FrameDataGrab: the reply was for another command")
        name, image, direction = decode_frame(bytes(body))
        if not name.startswith("Z"):
            raise InstrumentError(f"Scan.FrameDataGrab: channel {self.z_channel} is {name!r}, "
                                  "not Z; pass z_channel=<its signal slot>")
        if image.shape != (pixels, pixels):
            raise MalformedReply(f"Scan.FrameDataGrab: wrong size: {image.shape[0]} x "
                                 f"{image.shape[1]} for a {pixels} x {pixels} scan")
        bad = np.count_nonzero(~np.isfinite(image))
        if bad:
            raise MalformedReply(f"Scan.FrameDataGrab: NaN image: {bad} of {image.size} pixels "
                                 "are not finite (a partial scan); not recorded")
        return np.ascontiguousarray(to_our_row_order(image, direction))

    def _tip_shaper(self, dip_m: float, bias_v: float, duration_s: float,
                    timeout_s: float) -> None:
        """Ramp the tip `dip_m` towards the sample at `bias_v`, then back; feedback restored."""
        imaging_bias_v = self._call("Bias_Get")[0]
        self._call("TipShaper_PropsSet", TIP_SHAPER_SETTLE_S, ON, bias_v, dip_m, duration_s,
                  imaging_bias_v, TIP_SHAPER_SETTLE_S, -dip_m, duration_s,
                  TIP_SHAPER_SETTLE_S, ON)
        self._call("TipShaper_Start", ON, _ms(timeout_s))

    def _approach(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self._call("AutoApproach_Open")
        self._call("AutoApproach_OnOffSet", ON)
        while self._call("AutoApproach_OnOffGet")[0]:
            if time.monotonic() > deadline:
                self._call("AutoApproach_OnOffSet", OFF)
                raise TimeoutError(f"auto-approach still running after {timeout_s} s")
            time.sleep(self.approach_poll_s)
        self._call("ZCtrl_OnOffSet", ON)

    def _withdraw(self, timeout_s: float) -> None:
        self._call("ZCtrl_Withdraw", ON, _ms(timeout_s))


def decode_frame(body: bytes) -> tuple[str, np.ndarray, str]:
    """(channel name, float32 image as recorded, scan direction) from a Scan.FrameDataGrab body.

    The rows come in the order the lines were recorded, as in an .sxm file; the direction
    (``"up"`` or ``"down"``) says how to put them in our order
    (`deepspm_bluesky.spmfiles.to_our_row_order`).

    Raises `InstrumentError` for a filled error section and `MalformedReply` when the
    sizes announced in the body do not add up to its length.
    """
    try:
        (name_size,) = struct.unpack_from(">i", body, 0)
        name = body[4:4 + name_size].decode("utf-8", errors="replace")
        offset = 4 + name_size
        rows, cols = struct.unpack_from(">ii", body, offset)
        offset += 8
        if rows < 0 or cols < 0 or offset + 4 * rows * cols + 12 > len(body):
            raise ValueError(f"{rows} x {cols} floats do not fit in {len(body)} bytes")
        image = np.frombuffer(body, ">f4", rows * cols, offset).reshape(rows, cols)
        offset += 4 * rows * cols
        (direction_word,) = struct.unpack_from(">I", body, offset)
        status, error_size = struct.unpack_from(">Ii", body, offset + 4)
        offset += 4
    except (struct.error, ValueError) as exc:
        raise MalformedReply(f"Scan.FrameDataGrab: malformed body of {len(body)} bytes "
                             f"({exc}): {body[:40]!r}") from None
    error = body[offset + 8:offset + 8 + max(error_size, 0)].decode("utf-8", errors="replace")
    if status or error:
        raise InstrumentError(f"Scan.FrameDataGrab: the controller reported {error!r}")
    if direction_word not in SCAN_DIRECTIONS:
        raise MalformedReply(f"Scan.FrameDataGrab: scan direction {direction_word} is neither "
                             "1 (up) nor 0 (down)")
    return name, image.astype(np.float32), SCAN_DIRECTIONS[direction_word]


def _float32_value(value: float) -> float:
    """A float32 from the wire as the decimal it stands for (8.4999999e-07 -> 8.5e-07)."""
    return float(f"{float(value):.7g}")


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def nanonis_stm(host: str, port: int, name: str = "stm", *,
                outage_s: float = DEFAULT_OUTAGE_S, **options: Any) -> STM:
    """An `STM` driving a Nanonis controller's TCP interface at (host, port).

    Parameters
    ----------
    host, port
        The controller's TCP programming interface.
    name
        Name of the Ophyd device.
    outage_s
        How long a lost connection is waited for before the device gives up (600 s).
    **options
        Passed to `NanonisBackend` (``z_channel``, ``timeouts_s``, ``retries``, ...).
    """
    return STM(backend=NanonisBackend(host, port, outage_s=outage_s, **options), name=name)
