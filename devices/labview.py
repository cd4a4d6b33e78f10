"""Client backend for the DeepSPM LabVIEW instrument server, and the `labview_stm` factory.

A lab that runs DeepSPM's LabVIEW server can drive it from Bluesky unchanged. Compared with
the reference client, replies are framed (exactly the announced bytes are read; text is read
until the server falls quiet), each request kind has its own timeout, a dropped connection is
re-opened with a bounded number of retries, and a malformed reply raises `MalformedReply`
naming the request and what came back. An image with a missing or non-finite pixel is never
returned.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from deepspm_bluesky.actions import Action
from deepspm_bluesky.servers import labview_wire as wire

from .stm import STM

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds to wait for the reply to each request kind (scans and area moves take minutes).
DEFAULT_TIMEOUTS_S = {
    "scan": 900.0, "tipshaping": 120.0, "tipclean": 900.0, "getparam": 10.0,
    "approach": 900.0, "movearea": 3600.0, "withdraw": 60.0, "setparam": 10.0,
}
TEXT_QUIET_S = 0.05  # a text reply is complete when nothing more arrives for this long
MAX_TEXT_BYTES = 4096


class MalformedReply(ValueError):
    """The server answered, but not with what the request calls for."""


class InstrumentError(RuntimeError):
    """The server understood the request and reported that it failed."""


class TruncatedReply(ConnectionError):
    """The connection closed before the announced reply was complete."""


class TCPConnection:
    """A client socket that opens lazily, reads exact byte counts and honours deadlines.

    Parameters
    ----------
    host, port
        The server.
    connect_timeout_s
        Limit on opening the connection.
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float = 5.0) -> None:
        self.host, self.port = host, int(port)
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> socket.socket:
        """The open socket (connecting first if needed)."""
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def discard_stale(self) -> bytes:
        """Drop bytes left over from an earlier reply; close if the server hung up."""
        if self._sock is None:
            return b""
        stale = b""
        while select.select([self._sock], [], [], 0)[0]:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:  # the server closed the connection since the last request
                self.close()
                break
            stale += chunk
        if stale:
            log.warning("discarded %d stale bytes from %s:%d: %r", len(stale), self.host,
                        self.port, stale[:80])
        return stale

    def sendall(self, data: bytes, deadline: float, what: str) -> None:
        sock = self.open()
        sock.settimeout(_remaining(deadline, what))
        sock.sendall(data)

    def recv_exactly(self, n: int, deadline: float, what: str) -> bytes:
        """Exactly `n` bytes; `TruncatedReply` at end of stream, `TimeoutError` at deadline."""
        sock, buffer, got = self.open(), bytearray(n), 0
        view = memoryview(buffer)
        while got < n:
            sock.settimeout(_remaining(deadline, f"{what} (got {got} of {n} bytes)"))
            try:
                count = sock.recv_into(view[got:])
            except TimeoutError:
                raise TimeoutError(f"{what}: reply incomplete at the deadline "
                                   f"(got {got} of {n} bytes)") from None
            if count == 0:
                raise TruncatedReply(f"{what}: reply truncated, the connection closed after "
                                     f"{got} of {n} bytes")
            got += count
        return bytes(buffer)

    def recv_some(self, deadline: float, what: str, max_bytes: int = 65536) -> bytes:
        """Whatever arrives first (b"" when the server closed), waiting until the deadline."""
        sock = self.open()
        sock.settimeout(_remaining(deadline, what))
        try:
            return sock.recv(max_bytes)
        except TimeoutError:
            raise TimeoutError(f"{what}: no reply before the deadline") from None

    def recv_available(self, wait_s: float, max_bytes: int = 65536) -> bytes:
        """Bytes arriving within `wait_s` (b"" if none or closed); never raises a timeout."""
        if self._sock is None or not select.select([self._sock], [], [], wait_s)[0]:
            return b""
        try:
            return self._sock.recv(max_bytes)
        except OSError:
            return b""


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{what}: timed out")
    return left


def call_with_retries(label: str, attempt: Callable[[], T], *, connection: TCPConnection,
                      retries: int, delay_s: float,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `attempt`, re-opening the connection after network errors, `retries` times at most.

    A malformed reply or an instrument error is raised at once (after closing the
    connection, whose stream can no longer be trusted); a network error (refused, reset,
    closed, timed out) is retried on a fresh connection and, when the retries are used up,
    raised as `TimeoutError` or `ConnectionError` naming `label` and the last failure.
    """
    last: OSError | None = None
    for number in range(1, retries + 2):
        try:
            return attempt()
        except (MalformedReply, InstrumentError):
            connection.close()
            raise
        except OSError as exc:
            connection.close()
            last = exc
            log.warning("%s: attempt %d of %d failed: %s", label, number, retries + 1, exc)
            if number <= retries:
                sleep(delay_s)
    kind = TimeoutError if isinstance(last, TimeoutError) else ConnectionError
    raise kind(f"{label}: no good reply from {connection.host}:{connection.port} after "
               f"{retries + 1} attempts; last error: {last}") from last


class LabVIEWBackend:
    """The STM backend calls, spoken to a DeepSPM LabVIEW instrument server.

    Parameters
    ----------
    host, port
        The instrument server (DeepSPM's default port is 50008).
    timeouts_s
        Per request kind (``scan``, ``tipshaping``, ``tipclean``, ``getparam``,
        ``approach``, ``movearea``, ``withdraw``, ``setparam``), merged over
        `DEFAULT_TIMEOUTS_S`.
    retries
        Re-connections tried after a network error before giving up on a request.
    retry_delay_s
        Pause before each retry.
    text_quiet_s
        A text reply is complete when no more bytes arrive for this long.
    connect_timeout_s
        Limit on opening a connection.

    Notes
    -----
    Requests from several threads (the device's backend thread, a signal put from the
    RunEngine's) are sent one at a time. Every request is resent after a dropped
    connection, conditioning included (the instrument may then have run it twice; a
    warning is logged for each failed attempt). ``withdraw`` and the
    bias and setpoint setters use extensions of the protocol that our server implements
    (`deepspm_bluesky.servers.labview_wire`); the original LabVIEW server does not.
    """

    def __init__(self, host: str, port: int, *, timeouts_s: dict[str, float] | None = None,
                 retries: int = 3, retry_delay_s: float = 1.0,
                 text_quiet_s: float = TEXT_QUIET_S, connect_timeout_s: float = 5.0) -> None:
        unknown = set(timeouts_s or {}) - set(DEFAULT_TIMEOUTS_S)
        if unknown:
            raise ValueError(f"unknown request kinds {sorted(unknown)}; known: "
                             f"{sorted(DEFAULT_TIMEOUTS_S)}")
        self.timeouts_s = {**DEFAULT_TIMEOUTS_S, **(timeouts_s or {})}
        self.retries, self.retry_delay_s, self.text_quiet_s = retries, retry_delay_s, text_quiet_s
        self.connection = TCPConnection(host, port, connect_timeout_s=connect_timeout_s)
        self._lock = threading.Lock()  # one request on the wire at a time, whatever the thread

    def close(self) -> None:
        with self._lock:
            self.connection.close()

    # -- backend interface ---------------------------------------------------------------
    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """A (pixels, pixels) float32 image of heights in metres; never a partial one."""
        request = wire.scan_request(x_m, y_m, size_m, pixels)
        return self._request(request, lambda deadline: self._read_image(request, deadline,
                                                                       pixels))

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Dip, pulse or stall at (x, y), as DeepSPM's ``tipshaping`` request."""
        dip_m = action.dip_nm * 1e-9 if action.kind == "dip" else 0.0
        bias_v = action.bias_v if action.kind != "stall" else 0.0
        duration_s = action.duration_s if action.kind != "stall" else 0.0
        self._text(wire.tipshaping_request(x_m, y_m, dip_m, bias_v, duration_s))

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """``tipclean`` at (x, y); True when the server answers ``1``."""
        request = f"tipclean({wire.format_nano(x_m)},{wire.format_nano(y_m)})"
        return self._text(request, done=lambda text: text.strip() in ("0", "1"),
                          parse=_clean_result)

    def approach(self) -> None:
        """``approach(f)``: re-approach the tip."""
        self._text("approach(f)")

    def withdraw(self) -> None:
        """``withdraw()`` (an extension of the protocol)."""
        self._text("withdraw()")

    def move_area(self) -> int:
        """``movearea(y+)``; the number of crashes the server reports."""
        return self._text("movearea(y+)", done=lambda text: bool(wire.MOVEAREA_REPLY.search(text)),
                          parse=_crash_count)

    def scan_range_m(self) -> float:
        """``getparam(Range)``: side of the approach area in m."""
        return self._getparam("Range")

    def z_range_m(self) -> float:
        """``getparam(zRange)``: range of the z piezo in m."""
        return self._getparam("zRange")

    def set_bias(self, bias_v: float) -> None:
        """``setparam(Bias,<V>)`` (an extension of the protocol)."""
        self._text(f"setparam(Bias,{bias_v!r})")

    def set_setpoint(self, current_a: float) -> None:
        """``setparam(Setpoint,<A>)`` (an extension of the protocol)."""
        self._text(f"setparam(Setpoint,{current_a!r})")

    # -- requests --------------------------------------------------------------------------
    def _request(self, request: str, read: Callable[[float], T]) -> T:
        """Send `request` and read its reply with `read(deadline)`, retrying network errors."""
        timeout_s = self.timeouts_s[request.split("(", 1)[0]]

        def attempt() -> T:
            self.connection.discard_stale()
            deadline = time.monotonic() + timeout_s
            self.connection.sendall(request.encode("ascii"), deadline, request)
            return read(deadline)

        with self._lock:
            return call_with_retries(request, attempt, connection=self.connection,
                                     retries=self.retries, delay_s=self.retry_delay_s)

    def _text(self, request: str, *, done: Callable[[str], bool] | None = None,
              parse: Callable[[str, str], T] | None = None) -> T | str:
        """Send a request answered by text and `parse(request, text)` it.

        A reply starting with ``error`` raises `InstrumentError`; a reply `parse` cannot
        read raises `MalformedReply`; both close the connection.
        """
        def read(deadline: float) -> T | str:
            reply = self._read_text(request, deadline, done)
            if reply.lstrip().lower().startswith("error"):
                raise InstrumentError(f"{request}: the server replied {reply[:200]!r}")
            return parse(request, reply) if parse is not None else reply

        return self._request(request, read)

    def _getparam(self, name: str) -> float:
        return self._text(f"getparam({name})", parse=_parameter_value)

    # -- replies ---------------------------------------------------------------------------
    def _read_image(self, request: str, deadline: float, pixels: int) -> np.ndarray:
        header = self.connection.recv_exactly(wire.SHAPE_HEADER.size, deadline, request)
        rows, cols = wire.SHAPE_HEADER.unpack(header)
        if rows == cols == 0:
            raise MalformedReply(f"{request}: bad shape header: 0 x 0, the server refused the "
                                 "scan or has no image")
        if not (0 < rows <= wire.MAX_PIXELS and 0 < cols <= wire.MAX_PIXELS):
            more = self.connection.recv_available(self.text_quiet_s, 200)
            raise MalformedReply(f"{request}: bad shape header {header!r} (rows {rows}, cols "
                                 f"{cols}), followed by {more[:80]!r}")
        if (rows, cols) != (pixels, pixels):
            raise MalformedReply(f"{request}: wrong size: the server announced a {rows} x {cols}"
                                 f" image for a {pixels} x {pixels} scan")
        payload = self.connection.recv_exactly(rows * cols * 4, deadline, request)
        image = np.frombuffer(payload, wire.PIXEL_DTYPE).reshape(rows, cols).astype(np.float32)
        bad = np.count_nonzero(~np.isfinite(image))
        if bad:
            raise MalformedReply(f"{request}: NaN image: {bad} of {image.size} pixels are not "
                                 "finite (a partial or failed scan); not recorded")
        return image

    def _read_text(self, request: str, deadline: float,
                   done: Callable[[str], bool] | None) -> str:
        data = self.connection.recv_some(deadline, request)
        if not data:
            raise ConnectionError(f"{request}: the connection closed before any reply")
        while not (done is not None and done(data.decode("ascii", errors="replace"))):
            wait_s = min(self.text_quiet_s, max(deadline - time.monotonic(), 0.0))
            more = self.connection.recv_available(wait_s)
            if not more:
                break
            data += more
            if len(data) > MAX_TEXT_BYTES:
                raise MalformedReply(f"{request}: text reply longer than {MAX_TEXT_BYTES} "
                                     f"bytes: {data[:80]!r}...")
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedReply(f"{request}: the reply is not ASCII text: {data[:80]!r}") from None


def _clean_result(request: str, reply: str) -> bool:
    if reply.strip() not in ("0", "1"):
        raise MalformedReply(f"{request}: expected '1' or '0', got {reply[:80]!r}")
    return reply.strip() == "1"


def _crash_count(request: str, reply: str) -> int:
    match = wire.MOVEAREA_REPLY.search(reply)
    if match is None:
        raise MalformedReply(f"{request}: expected 'Approach area changed with N crashes', "
                             f"got {reply[:80]!r}")
    return int(match.group(1))


def _parameter_value(request: str, reply: str) -> float:
    """The metres of a ``<name>:<metres>`` reply to ``getparam(<name>)``."""
    name = request[len("getparam("):-1]
    label, _, value = reply.strip().partition(":")
    try:
        if label != name:
            raise ValueError
        number = wire.parse_number(value)
    except ValueError:
        raise MalformedReply(f"{request}: expected '{name}:<metres>', got {reply[:80]!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise MalformedReply(f"{request}: {name} must be a positive length, got {reply!r}")
    return number


def labview_stm(host: str, port: int, name: str = "stm", **options: Any) -> STM:
    """An `STM` driving a DeepSPM LabVIEW instrument server at (host, port).

    Parameters
    ----------
    host, port
        The instrument server.
    name
        Name of the Ophyd device.
    **options
        Passed to `LabVIEWBackend` (``timeouts_s``, ``retries``, ...).
    """
    return STM(backend=LabVIEWBackend(host, port, **options), name=name)


