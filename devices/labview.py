"""Client backend for the DeepSPM LabVIEW instrument server, and the `labview_stm` factory.

A lab that runs DeepSPM's LabVIEW server can drive it from Bluesky unchanged: by default only
the requests of DeepSPM's protocol are ever sent (``scan``, ``tipshaping``, ``tipclean``,
``getparam``, ``approach``, ``movearea``) and replies are read as DeepSPM's client reads them:
the number after the colon of a ``getparam`` reply, whatever its label (DeepSPM's test server
answers every ``getparam`` with ``Range:<metres>``); any short text for ``tipshaping`` and
``approach``; ``1`` or ``0`` for ``tipclean``. The extensions our own ``labview-server``
understands (``withdraw``, ``setparam``) are used only when the backend is told the server
has them; otherwise the features that need them raise `UnsupportedRequest` without sending.

Compared with the reference client, replies are framed (exactly the announced bytes are read;
text is read until the server falls quiet), each request kind has its own timeout (a scan's
follows its frame and the tip speed), a malformed reply raises `MalformedReply` naming the
request and what came back, and an image with a missing or non-finite pixel is never
returned. The connection policy is `transport.Link`'s: reads are re-asked through outages of
up to `outage_s`, acts (``tipshaping``, ``tipclean``, ``approach``, ``movearea``) are sent at
most once and a lost reply raises `OutcomeUnknown`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import numpy as np

from deepspm_bluesky.actions import Action
from deepspm_bluesky.servers import labview_wire as wire

from .backend import SCAN_TIMEOUT_MARGIN_S, LinkedBackend
from .stm import STM
from .transport import (
    DEFAULT_OUTAGE_S,
    RETRY_DELAY_S,
    InstrumentError,
    Link,
    MalformedReply,
    UnsupportedRequest,
)

T = TypeVar("T")

# Seconds to wait for the reply to each request kind; a scan's follows its frame instead
# (`backend.scan_timeout_s`) unless a fixed "scan" timeout is given.
DEFAULT_TIMEOUTS_S = {
    "tipshaping": 120.0, "tipclean": 900.0, "getparam": 10.0, "approach": 900.0,
    "movearea": 3600.0, "withdraw": 60.0, "setparam": 10.0,
}
TIMEOUT_KINDS = ("scan", *DEFAULT_TIMEOUTS_S)
ACTS = ("tipshaping", "tipclean", "approach", "movearea")  # sent at most once
TEXT_QUIET_S = 0.05  # a text reply is complete when nothing more arrives for this long
MAX_TEXT_BYTES = 4096


class LabVIEWBackend(LinkedBackend):
    """The STM backend calls, spoken to a DeepSPM LabVIEW instrument server.

    Parameters
    ----------
    host, port
        The instrument server (DeepSPM's default port is 50008).
    extensions
        Requests beyond DeepSPM's protocol that the server understands: any of
        ``"withdraw"`` and ``"setparam"`` (our ``labview-server`` has both; DeepSPM's own
        server has neither, hence the default).
    outage_s
        How long a lost connection is re-tried before the backend gives up.
    timeouts_s
        Per request kind (``scan``, ``tipshaping``, ``tipclean``, ``getparam``, ``approach``,
        ``movearea``, ``withdraw``, ``setparam``), merged over `DEFAULT_TIMEOUTS_S`; a
        ``scan`` entry replaces the timeout computed from the frame.
    retries
        How often a reply that did not come in time is asked for again (reads only).
    retry_delay_s
        First pause before re-opening a lost connection (it doubles, up to 2 s).
    scan_margin_s
        Time a scan may take beyond twice its duration at the tip speed (settling, drift
        waits): the scan timeout is ``2 * lines * 2 * size / speed + scan_margin_s``.
    text_quiet_s
        A text reply is complete when no more bytes arrive for this long.
    connect_timeout_s
        Limit on opening a connection.

    Notes
    -----
    Requests from several threads (the device's backend thread, a signal put from the
    RunEngine's) are sent one at a time. A reply starting with ``error`` raises
    `InstrumentError` (our server's way to refuse; DeepSPM's never sends one).

    Examples
    --------
    >>> backend = LabVIEWBackend("127.0.0.1", 50008)              # doctest: +SKIP
    >>> backend.z_range_m()          # 'getparam(zRange)' -> 'Range:1e-06'
    1e-06
    """

    def __init__(self, host: str, port: int, *, extensions: Collection[str] = (),
                 outage_s: float = DEFAULT_OUTAGE_S, timeouts_s: dict[str, float] | None = None,
                 retries: int = 3, retry_delay_s: float = RETRY_DELAY_S,
                 scan_margin_s: float = SCAN_TIMEOUT_MARGIN_S,
                 text_quiet_s: float = TEXT_QUIET_S, connect_timeout_s: float = 5.0) -> None:
        unknown = set(timeouts_s or {}) - set(TIMEOUT_KINDS)
        if unknown:
            raise ValueError(f"unknown request kinds {sorted(unknown)}; known: "
                             f"{sorted(TIMEOUT_KINDS)}")
        strange = set(extensions) - set(wire.EXTENSION_REQUESTS)
        if strange:
            raise ValueError(f"unknown protocol extensions {sorted(strange)}; known: "
                             f"{list(wire.EXTENSION_REQUESTS)}")
        self.extensions = tuple(e for e in wire.EXTENSION_REQUESTS if e in extensions)
        self.timeouts_s = {**DEFAULT_TIMEOUTS_S, **(timeouts_s or {})}
        self.text_quiet_s, self.scan_margin_s = text_quiet_s, scan_margin_s
        self.link = Link(host, port, outage_s=outage_s, retries=retries,
                         retry_delay_s=retry_delay_s, connect_timeout_s=connect_timeout_s)
        self._reported: dict[str, float] = {}

    @property
    def connection(self):
        """The `transport.TCPConnection` under the link."""
        return self.link.connection

    def instrument_metadata(self) -> dict:
        """Backend, address, protocol extensions and the ranges the server reported."""
        return {"backend": "labview", "host": self.connection.host,
                "port": self.connection.port, "protocol": "DeepSPM LabVIEW",
                "protocol_extensions": list(self.extensions), "outage_s": self.link.outage_s,
                **{f"reported_{name}_m": value for name, value in self._reported.items()}}

    # -- backend interface ---------------------------------------------------------------
    def scan(self, x_m: float, y_m: float, size_m: float, pixels: int) -> np.ndarray:
        """A (pixels, pixels) float32 image of heights in metres; never a partial one."""
        request = wire.scan_request(x_m, y_m, size_m, pixels)
        timeout_s = self.scan_timeout_s(size_m, pixels)
        return self._exchange(request, lambda deadline: self._read_image(request, deadline,
                                                                        pixels), timeout_s)

    def condition(self, action: Action, x_m: float, y_m: float) -> None:
        """Dip, pulse or stall at (x, y), as DeepSPM's ``tipshaping`` request (sent once)."""
        dip_m = action.dip_nm * 1e-9 if action.kind == "dip" else 0.0
        bias_v = action.bias_v if action.kind != "stall" else 0.0
        duration_s = action.duration_s if action.kind != "stall" else 0.0
        self._text(wire.tipshaping_request(x_m, y_m, dip_m, bias_v, duration_s))

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        """``tipclean`` at (x, y), sent once; True when the server answers ``1``."""
        request = f"tipclean({wire.format_nano(x_m)},{wire.format_nano(y_m)})"
        return self._text(request, done=lambda text: text.strip() in ("0", "1"),
                          parse=_clean_result)

    def approach(self) -> None:
        """``approach(f)``: re-approach the tip (sent once)."""
        self._text("approach(f)")

    def withdraw(self) -> None:
        """``withdraw()``: only with the ``withdraw`` extension."""
        self._require("withdraw", "withdrawing the tip")
        self._text("withdraw()")

    def move_area(self) -> int:
        """``movearea(y+)``, sent once; the number of crashes the server reports."""
        return self._text("movearea(y+)", done=lambda text: bool(wire.MOVEAREA_REPLY.search(text)),
                          parse=_crash_count)

    def scan_range_m(self) -> float:
        """``getparam(Range)``: side of the approach area in m."""
        return self._getparam("Range")

    def z_range_m(self) -> float:
        """``getparam(zRange)``: range of the z piezo in m."""
        return self._getparam("zRange")

    def set_bias(self, bias_v: float) -> None:
        """``setparam(Bias,<V>)``: only with the ``setparam`` extension."""
        self._require("setparam", "setting the bias")
        self._text(f"setparam(Bias,{bias_v!r})")

    def set_setpoint(self, current_a: float) -> None:
        """``setparam(Setpoint,<A>)``: only with the ``setparam`` extension."""
        self._require("setparam", "setting the current setpoint")
        self._text(f"setparam(Setpoint,{current_a!r})")

    # -- requests --------------------------------------------------------------------------
    def _require(self, extension: str, feature: str) -> None:
        if extension not in self.extensions:
            raise UnsupportedRequest(
                f"{feature} needs the '{extension}' request, which DeepSPM's LabVIEW protocol "
                f"does not have; nothing was sent to {self.connection.address}. If that server "
                f"understands it, create the backend with extensions=('{extension}',)")

    def _exchange(self, request: str, read: Callable[[float], T],
                  timeout_s: float | None = None) -> T:
        """Send `request` and read its reply with `read(deadline)` under the link's policy."""
        verb = request.split("(", 1)[0]
        timeout_s = self.timeouts_s[verb] if timeout_s is None else timeout_s
        acting = verb in ACTS

        def attempt() -> T:
            deadline = time.monotonic() + timeout_s
            self.connection.open()  # a refused connection is retried, even for an act
            if acting:
                self.link.mark_sent()
            self.connection.sendall(request.encode("ascii"), deadline, request)
            return read(deadline)

        return (self.link.act if acting else self.link.read)(request, attempt)

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

        return self._exchange(request, read)

    def _getparam(self, name: str) -> float:
        value = self._text(f"getparam({name})", parse=_parameter_value)
        self._reported[name] = value
        return value

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
    """The metres after the colon of a ``<label>:<metres>`` reply, whatever the label.

    DeepSPM's client reads only the number (its test server labels every reply ``Range``);
    a reply without a colon is read whole.
    """
    _, _, value = reply.strip().rpartition(":")
    try:
        number = wire.parse_number(value)
    except ValueError:
        raise MalformedReply(f"{request}: expected '<label>:<metres>', got {reply[:80]!r}"
                             ) from None
    if not math.isfinite(number) or number <= 0:
        raise MalformedReply(f"{request}: expected a positive length in metres, got "
                             f"{reply[:80]!r}")
    return number


def labview_stm(host: str, port: int, name: str = "stm", *,
                outage_s: float = DEFAULT_OUTAGE_S, **options: Any) -> STM:
    """An `STM` driving a DeepSPM LabVIEW instrument server at (host, port).

    Parameters
    ----------
    host, port
        The instrument server.
    name
        Name of the Ophyd device.
    outage_s
        How long a lost connection is waited for before the device gives up (600 s).
    **options
        Passed to `LabVIEWBackend` (``extensions``, ``timeouts_s``, ``retries``, ...).

    Examples
    --------
    >>> stm = labview_stm("127.0.0.1", 50008, extensions=("withdraw", "setparam"))  # doctest: +SKIP
    """
    return STM(backend=LabVIEWBackend(host, port, outage_s=outage_s, **options), name=name)
