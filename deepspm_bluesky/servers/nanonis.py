"""A fake Nanonis controller: the Nanonis TCP binary protocol in front of the simulator.

Only the commands the Nanonis backend uses are implemented. Messages follow the Nanonis
TCP programming interface: a 40-byte header (command name, 32 bytes NUL-padded; body size,
int32; send-response-back flag, uint16; 2 bytes zero), then the body, big-endian. A response
has the same header layout and a body of the return arguments followed by the error section:
error status (uint32, 0 = no error), error description size (int32), error description.

Examples
--------
>>> from deepspm_bluesky.sim import SimulatedMicroscope
>>> with NanonisServer(SimulatedMicroscope(seed=1)) as server:
...     host, port = server.address
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deepspm_bluesky.sim import SimulatedMicroscope

from .labview import action_from_wire
from .tcp import SingleClientServer, log_to_stderr, milliseconds_since

log = logging.getLogger(__name__)

HEADER = struct.Struct(">32siHH")
DEFAULT_PORT = 6501  # the first port of the Nanonis TCP programming interface
MAX_BODY_BYTES = 1 << 20
# Signal slots of the scan buffer; the Z channel is where most installations keep it.
SIGNAL_SLOTS = {0: "Current (A)", 14: "Z (m)"}
Z_SLOT = 14
# A tip-shaper dip at least this deep counts as heavy cleaning (the simulator's tip_clean).
HEAVY_DIP_M = -8e-9
# Motor.StartMove directions: 0 X+, 1 X-, 2 Y+, 3 Y-, 4 Z+, 5 Z-.
LATERAL_DIRECTIONS = (0, 1, 2, 3)


class CommandError(Exception):
    """Reported to the client in the error section of the response."""


@dataclass
class ControllerState:
    """What the fake controller remembers between commands."""

    frame: tuple[float, float, float, float, float] = (0.0, 0.0, 10e-9, 10e-9, 0.0)
    channels: list[int] = field(default_factory=lambda: [0, Z_SLOT])
    pixels: int = 64
    lines: int = 64
    tip_xy: tuple[float, float] = (0.0, 0.0)
    image: np.ndarray | None = None
    scan_finished: bool = False
    scan_up: bool = True  # direction of the last scan; frames are kept as recorded
    tip_shaper: tuple = (0.05, 1, 0.02, -1e-9, 0.2, 1.0, 0.05, 1e-9, 0.2, 0.05, 1)
    z_controller_on: bool = True


def decode_args(body: bytes, codes: str) -> list:
    """Unpack big-endian arguments; ``a`` is an int32 count followed by that many int32."""
    values, offset = [], 0
    for code in codes:
        if code == "a":
            (count,) = struct.unpack_from(">i", body, offset)
            if not 0 <= count <= 128:
                raise CommandError(f"array length {count} out of range")
            values.append(list(struct.unpack_from(f">{count}i", body, offset + 4)))
            offset += 4 + 4 * count
        else:
            values.append(struct.unpack_from(">" + code, body, offset)[0])
            offset += struct.calcsize(code)
    if offset != len(body):
        raise CommandError(f"body has {len(body)} bytes, the arguments take {offset}")
    return values


def pack_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">i", len(data)) + data


def response(name: bytes, returned: bytes, error: str = "") -> bytes:
    """A full response message: header, return arguments, error section."""
    description = error.encode()
    body = returned + struct.pack(">Ii", 1 if error else 0, len(description)) + description
    return HEADER.pack(name, len(body), 0, 0) + body


class NanonisServer(SingleClientServer):
    """Serves a simulated microscope over the Nanonis TCP protocol (a subset of commands).

    Parameters
    ----------
    microscope
        The simulator behind the fake controller.
    host, port
        Where to listen; by default a free port on 127.0.0.1 only.
    """

    def __init__(self, microscope: SimulatedMicroscope, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host, port)
        self.microscope = microscope
        self.state = ControllerState()
        self.commands: dict[str, tuple[str, Callable[..., bytes]]] = {
            "Bias.Set": ("f", self._bias_set),
            "Bias.Get": ("", self._bias_get),
            "Bias.Pulse": ("IffHH", self._bias_pulse),
            "ZCtrl.SetpntSet": ("f", self._setpoint_set),
            "ZCtrl.OnOffSet": ("I", self._zctrl_on_off),
            "ZCtrl.Withdraw": ("Ii", self._withdraw),
            "AutoApproach.Open": ("", lambda: b""),
            "AutoApproach.OnOffSet": ("H", self._approach),
            "AutoApproach.OnOffGet": ("", lambda: struct.pack(">H", 0)),
            "Motor.StartMove": ("IHII", self._motor_move),
            "Piezo.RangeGet": ("", self._piezo_range),
            "FolMe.XYPosSet": ("ddI", self._move_tip),
            "Scan.FrameSet": ("fffff", self._frame_set),
            "Scan.BufferSet": ("aii", self._buffer_set),
            "Scan.BufferGet": ("", self._buffer_get),
            "Scan.Action": ("HI", self._scan_action),
            "Scan.WaitEndOfScan": ("i", self._wait_end_of_scan),
            "Scan.FrameDataGrab": ("II", self._frame_data_grab),
            "Scan.SpeedSet": ("ffffHf", self._speed_set),
            "Scan.SpeedGet": ("", self._speed_get),
            "TipShaper.PropsSet": ("fIffffffffI", self._tip_shaper_props),
            "TipShaper.Start": ("Ii", self._tip_shaper_start),
        }

    def serve_client(self, conn: socket.socket) -> None:
        while True:
            header = self.receive_exactly(conn, HEADER.size)
            if header is None:
                return
            name, body_size, send_back, _ = HEADER.unpack(header)
            if not 0 <= body_size <= MAX_BODY_BYTES:
                log.warning("body size %d out of range; dropping the client", body_size)
                return
            body = self.receive_exactly(conn, body_size) if body_size else b""
            if body is None:
                log.info("client left in the middle of %r", name.rstrip(b"\0"))
                return
            if self.client_gone(conn):
                log.info("client left before the reply to %r; not running it", name)
                return
            reply = self.reply(name, body)
            if send_back:
                self.respond(conn, reply)

    def respond(self, conn: socket.socket, reply: bytes) -> None:
        """Send one response message (tests override this to inject faults)."""
        self.send(conn, reply)

    def reply(self, name: bytes, body: bytes) -> bytes:
        """Run one command; the response message, errors in its error section (logged)."""
        started = time.perf_counter()
        message = self._answer(name, body)
        log.debug("%s (%d bytes) -> %d bytes in %.1f ms", name.rstrip(b"\0").decode(
            "ascii", errors="replace"), len(body), len(message) - HEADER.size,
            milliseconds_since(started))
        return message

    def _answer(self, name: bytes, body: bytes) -> bytes:
        command = name.rstrip(b"\0").decode("ascii", errors="replace")
        try:
            codes, handler = self.commands[command]
        except KeyError:
            return response(name, b"", f"unknown command {command!r} (fake Nanonis server)")
        try:
            args = decode_args(body, codes)
            return response(name, handler(*args))
        except (CommandError, struct.error, ValueError) as exc:
            log.warning("%s failed: %s", command, exc)
            return response(name, b"", f"{command}: {exc}")
        except Exception as exc:  # a failing simulator must not take the server down
            log.exception("%s failed", command)
            return response(name, b"", f"{command}: {type(exc).__name__}: {exc}")

    # -- commands: decoded arguments -> return arguments -------------------------------
    def _bias_set(self, bias_v: float) -> bytes:
        self.microscope.set_bias(bias_v)
        return b""

    def _bias_get(self) -> bytes:
        return struct.pack(">f", self.microscope.bias_v)

    def _bias_pulse(self, wait: int, width_s: float, bias_v: float, hold: int,
                    absolute_relative: int) -> bytes:
        if absolute_relative == 1:
            bias_v += self.microscope.bias_v
        self.microscope.condition(action_from_wire(0.0, bias_v, width_s), *self.state.tip_xy)
        return b""

    def _setpoint_set(self, current_a: float) -> bytes:
        self.microscope.set_setpoint(current_a)
        return b""

    def _zctrl_on_off(self, on: int) -> bytes:
        self.state.z_controller_on = bool(on)
        return b""

    def _withdraw(self, wait: int, timeout_ms: int) -> bytes:
        self.state.z_controller_on = False
        self.microscope.withdraw()
        return b""

    def _approach(self, on: int) -> bytes:
        """Auto-approach; a tip already in tunnelling range stops it at once, unchanged."""
        if on and not self.microscope.tip.in_contact:
            self.microscope.approach()
        return b""

    def _motor_move(self, direction: int, steps: int, group: int, wait: int) -> bytes:
        if direction > 5:
            raise CommandError(f"direction {direction} is not one of 0..5")
        if direction in LATERAL_DIRECTIONS and steps > 0:
            self.microscope.move_area()
        return b""

    def _piezo_range(self) -> bytes:
        side, z = self.microscope.scan_range_m(), self.microscope.z_range_m()
        return struct.pack(">fff", side, side, z)

    def _move_tip(self, x_m: float, y_m: float, wait: int) -> bytes:
        self.state.tip_xy = (x_m, y_m)
        return b""

    def _frame_set(self, x: float, y: float, width: float, height: float,
                   angle: float) -> bytes:
        if width <= 0 or height <= 0:
            raise CommandError(f"frame size {width} x {height} m must be positive")
        self.state.frame = (x, y, width, height, angle)
        return b""

    def _buffer_set(self, channels: list[int], pixels: int, lines: int) -> bytes:
        unknown = [c for c in channels if c not in SIGNAL_SLOTS]
        if unknown or not 1 <= pixels <= 4096:
            raise CommandError(f"channels {unknown} unknown or pixels {pixels} out of range")
        self.state.channels, self.state.pixels = list(channels), pixels
        self.state.lines = lines if lines > 0 else pixels
        return b""

    def _buffer_get(self) -> bytes:
        s = self.state
        return (struct.pack(">i", len(s.channels)) + struct.pack(f">{len(s.channels)}i",
                *s.channels) + struct.pack(">ii", s.pixels, s.lines))

    def _scan_action(self, action: int, direction: int) -> bytes:
        if action != 0:  # stop, pause, ...: nothing runs in the background here
            return b""
        x, y, width, height, angle = self.state.frame
        if width != height or self.state.pixels != self.state.lines or angle != 0:
            raise CommandError("the simulator scans square, unrotated frames only")
        image = np.asarray(self.microscope.scan(x, y, width, self.state.pixels))
        self.state.scan_up = direction == 1
        # lines in the order recorded, as a real controller keeps them: top first going down
        self.state.image = image if self.state.scan_up else image[::-1]
        self.state.scan_finished = True
        return b""

    def _wait_end_of_scan(self, timeout_ms: int) -> bytes:
        timed_out = not self.state.scan_finished
        self.state.scan_finished = False
        return struct.pack(">II", int(timed_out), 0)  # no file was saved: empty path

    def _frame_data_grab(self, channel: int, direction: int) -> bytes:
        if channel not in self.state.channels:
            raise CommandError(f"channel {channel} is not in the scan buffer")
        image = self.state.image
        if image is None:
            raise CommandError("no scan data yet")
        if SIGNAL_SLOTS[channel] != SIGNAL_SLOTS[Z_SLOT]:
            image = np.full(image.shape, self.microscope.setpoint_a)
        rows, cols = image.shape
        return (pack_string(SIGNAL_SLOTS[channel]) + struct.pack(">ii", rows, cols)
                + np.asarray(image, ">f4").tobytes() + struct.pack(">I", int(self.state.scan_up)))

    def _speed_set(self, forward_m_s: float, backward_m_s: float, forward_line_s: float,
                   backward_line_s: float, keep: int, ratio: float) -> bytes:
        if keep != 1:
            raise CommandError("the fake controller keeps the linear speed constant only")
        self.microscope.set_scan_speed(forward_m_s)
        return b""

    def _speed_get(self) -> bytes:
        speed = self.microscope.scan_speed_m_s
        line_s = self.state.frame[2] / speed
        return struct.pack(">ffffHf", speed, speed, line_s, line_s, 1, 1.0)

    def _tip_shaper_props(self, *props: float) -> bytes:
        self.state.tip_shaper = props
        return b""

    def _tip_shaper_start(self, wait: int, timeout_ms: int) -> bytes:
        _, change_bias, bias_v, lift_m, lift_time_s, *_ = self.state.tip_shaper
        x, y = self.state.tip_xy
        if lift_m <= HEAVY_DIP_M:
            self.microscope.tip_clean(x, y)
        else:
            bias = bias_v if change_bias == 1 else self.microscope.bias_v
            self.microscope.condition(action_from_wire(min(lift_m, 0.0), bias, lift_time_s),
                                      x, y)
        return b""


def serve_nanonis(port: int = DEFAULT_PORT, seed: int = 0, host: str = "127.0.0.1",
                  verbose: bool = False) -> None:
    """Serve a fake Nanonis controller on a `SimulatedMicroscope(seed=seed)` until interrupted.

    Connections are logged to stderr; with `verbose`, every command and response with its time.
    """
    log_to_stderr(verbose)
    server = NanonisServer(SimulatedMicroscope(seed=seed), host, port)
    log.info("fake Nanonis TCP server (simulator, seed %d) on %s:%d", seed, *server.address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
