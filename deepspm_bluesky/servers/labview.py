"""The simulator behind the DeepSPM LabVIEW protocol, so any client of that protocol can use it.

`LabVIEWServer` answers the requests of the original DeepSPM instrument server (see
`labview_wire`) from a `SimulatedMicroscope`, one client at a time; `serve_labview` runs it
blocking for ``deepspm-bluesky labview-server``.

Examples
--------
>>> from deepspm_bluesky.sim import SimulatedMicroscope
>>> with LabVIEWServer(SimulatedMicroscope(seed=1)) as server:
...     host, port = server.address      # connect a client here
"""

from __future__ import annotations

import logging
import socket
import time

import numpy as np

from deepspm_bluesky.actions import Action
from deepspm_bluesky.sim import SimulatedMicroscope

from . import labview_wire as wire
from .tcp import SingleClientServer, log_to_stderr, milliseconds_since

log = logging.getLogger(__name__)


class LabVIEWServer(SingleClientServer):
    """Serves a simulated microscope over the DeepSPM LabVIEW protocol.

    Parameters
    ----------
    microscope
        The simulator answering the requests (anything with the backend calls).
    host, port
        Where to listen; by default a free port on 127.0.0.1 only.

    Notes
    -----
    A malformed request is answered with ``error: <what was wrong>`` (a scan with a
    0 x 0 image header), and the connection stays usable. A request whose client has
    already disconnected is not run.
    """

    def __init__(self, microscope: SimulatedMicroscope, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host, port)
        self.microscope = microscope
        self._handlers = {
            "scan": self._scan, "tipshaping": self._tipshaping, "tipclean": self._tipclean,
            "getparam": self._getparam, "approach": self._approach,
            "movearea": self._movearea, "withdraw": self._withdraw, "setparam": self._setparam,
        }

    def serve_client(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            end = buffer.find(b")")
            if end < 0:
                if len(buffer) > wire.MAX_REQUEST_BYTES:
                    self.send(conn, b"error: request too long or missing ')'")
                    return
                chunk = self.receive(conn, 4096)
                if not chunk:
                    if buffer.strip():
                        log.info("client left in the middle of request %r", buffer[:80])
                    return
                buffer += chunk
                continue
            request, buffer = buffer[: end + 1], buffer[end + 1:]
            if not buffer and self.client_gone(conn):
                log.info("client left before the reply to %r; not running it", request)
                return
            self.respond(conn, request.decode("ascii", errors="replace").strip())

    def respond(self, conn: socket.socket, request: str) -> None:
        """Send the reply to one request (tests override this to inject faults)."""
        self.send(conn, self.reply(request))

    def reply(self, request: str) -> bytes:
        """The reply bytes for one request text (logged at DEBUG with its timing)."""
        started = time.perf_counter()
        data = self._answer(request)
        log.debug("%s -> %s in %.1f ms", request, _describe(data, request),
                  milliseconds_since(started))
        return data

    def _answer(self, request: str) -> bytes:
        is_scan = request.lstrip().startswith("scan")
        try:
            name, args = wire.parse_request(request)
            handler = self._handlers.get(name)
            if handler is None:
                raise ValueError(f"unknown request {name!r}; known: {sorted(self._handlers)}")
            return handler(args)
        except ValueError as exc:
            log.warning("bad request %r: %s", request, exc)
            problem = str(exc)
        except Exception as exc:  # a failing simulator must not take the server down
            log.exception("request %r failed", request)
            problem = f"{type(exc).__name__}: {exc}"
        return wire.SHAPE_HEADER.pack(0, 0) if is_scan else f"error: {problem}".encode()

    # -- handlers: list of argument strings -> reply bytes ------------------------------
    def _scan(self, args: list[str]) -> bytes:
        x, y, size = _numbers(args[:3], "scan", 3)
        if len(args) != 4:
            raise ValueError(f"scan: expected 4 arguments, got {len(args)}")
        pixels = int(wire.parse_number(args[3]))
        if not 1 <= pixels <= wire.MAX_PIXELS or size <= 0:
            raise ValueError(f"scan: pixels {pixels} or size {size} m out of range")
        image = np.asarray(self.microscope.scan(x, y, size, pixels))
        return wire.SHAPE_HEADER.pack(*image.shape) + image.astype(wire.PIXEL_DTYPE).tobytes()

    def _tipshaping(self, args: list[str]) -> bytes:
        x, y, dip_m, bias_v, duration_s = _numbers(args, "tipshaping", 5)
        self.microscope.condition(action_from_wire(dip_m, bias_v, duration_s), x, y)
        return b"tip shaping done"

    def _tipclean(self, args: list[str]) -> bytes:
        x, y = _numbers(args, "tipclean", 2)
        return b"1" if self.microscope.tip_clean(x, y) else b"0"

    def _getparam(self, args: list[str]) -> bytes:
        params = {"Range": self.microscope.scan_range_m, "zRange": self.microscope.z_range_m}
        if len(args) != 1 or args[0] not in params:
            raise ValueError(f"getparam: expected one of {sorted(params)}, got {args}")
        return f"{args[0]}:{params[args[0]]()!r}".encode()

    def _approach(self, args: list[str]) -> bytes:
        self.microscope.approach()
        return b"approached"

    def _movearea(self, args: list[str]) -> bytes:
        crashes = self.microscope.move_area()
        return f"Approach area changed with {crashes} crashes".encode()

    def _withdraw(self, args: list[str]) -> bytes:
        self.microscope.withdraw()
        return b"withdrawn"

    def _setparam(self, args: list[str]) -> bytes:
        setters = {"Bias": self.microscope.set_bias, "Setpoint": self.microscope.set_setpoint}
        if len(args) != 2 or args[0] not in setters:
            raise ValueError(f"setparam: expected (Bias|Setpoint,<value>), got {args}")
        value = wire.parse_number(args[1])
        setters[args[0]](value)
        return f"{args[0]}:{value!r}".encode()


def _describe(reply: bytes, request: str) -> str:
    """A reply in a log line: an image by its shape, text as it is."""
    if request.lstrip().startswith("scan") and len(reply) >= wire.SHAPE_HEADER.size:
        rows, cols = wire.SHAPE_HEADER.unpack_from(reply)
        return f"{rows} x {cols} image ({len(reply)} bytes)"
    return repr(reply[:120].decode("ascii", errors="replace"))


def _numbers(args: list[str], request: str, count: int) -> list[float]:
    if len(args) < count:
        raise ValueError(f"{request}: expected {count} arguments, got {len(args)}")
    values = [wire.parse_number(a) for a in args[:count]]
    if not all(np.isfinite(values)):
        raise ValueError(f"{request}: arguments must be finite, got {args}")
    return values


def action_from_wire(dip_m: float, bias_v: float, duration_s: float) -> Action:
    """The conditioning action a ``tipshaping`` request describes (dip, pulse or stall)."""
    if dip_m < 0:
        kind = "dip"
    elif dip_m == 0 and bias_v != 0:
        kind = "pulse"
    elif dip_m == 0:
        kind = "stall"
    else:
        raise ValueError(f"tipshaping: dip depth must be <= 0 (towards the sample), got {dip_m}")
    return Action(name=f"wire {kind}", kind=kind, dip_nm=dip_m / 1e-9, bias_v=bias_v,
                  duration_s=max(duration_s, 0.0), forbid_radius_nm=0.0,
                  require_free_nm=0.0, reset=False)


def serve_labview(port: int = wire.DEFAULT_PORT, seed: int = 0, host: str = "127.0.0.1",
                  verbose: bool = False) -> None:
    """Serve a `SimulatedMicroscope(seed=seed)` on (host, port) until interrupted.

    Connections are logged to stderr; with `verbose`, every request and reply with its time.
    """
    log_to_stderr(verbose)
    server = LabVIEWServer(SimulatedMicroscope(seed=seed), host, port)
    log.info("DeepSPM LabVIEW protocol server (simulator, seed %d) on %s:%d", seed,
                *server.address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
