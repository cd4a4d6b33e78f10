"""The TCP link both network backends talk through: exact reads, deadlines, outages, acts once.

`TCPConnection` is the socket: it opens lazily, reads exactly the announced bytes and honours
deadlines. `Link` runs each request over it with two policies:

- **Reads** (scans, parameter reads, settings) are asked again after a network error. A lost
  connection is re-opened with backoff for up to `outage_s` seconds (10 minutes by default, so
  that a restarting instrument PC or a network blip is waited out); each such outage is kept
  as an `Outage` for `Link.take_outages`. A reply that does not come in time on an open
  connection is asked for again `retries` times. After that, `InstrumentUnreachable` (or
  `TimeoutError`) names the host, the port, the request and how long it waited.
- **Acts** (a pulse, a dip, a tip clean, an approach, a coarse move) are sent at most once.
  If the connection drops or the reply times out after the act was sent, the link re-opens the
  connection (waiting out an outage as for reads), sends nothing again and raises
  `OutcomeUnknown`: the instrument may or may not have acted, and only a new image can tell.

A malformed reply (`MalformedReply`) or an error the instrument reports (`InstrumentError`)
is never retried; the connection is closed, since its stream can no longer be trusted.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_OUTAGE_S = 600.0  # how long a lost instrument is waited for before the run gives up
RETRY_DELAY_S = 0.5  # first pause before re-opening a lost connection ...
MAX_RETRY_DELAY_S = 2.0  # ... doubling up to this, so a returning server is found quickly
CONNECT_TIMEOUT_S = 5.0


class MalformedReply(ValueError):
    """The server answered, but not with what the request calls for."""


class InstrumentError(RuntimeError):
    """The server understood the request and reported that it failed."""


class UnsupportedRequest(NotImplementedError):
    """The instrument's protocol has no request for this feature; nothing was sent."""


class TruncatedReply(ConnectionError):
    """The connection closed before the announced reply was complete."""


class ConnectFailed(ConnectionError):
    """No connection could be opened (refused, unreachable, timed out)."""


class InstrumentUnreachable(ConnectionError):
    """The instrument stayed unreachable for longer than the outage limit."""


class OutcomeUnknown(RuntimeError):
    """An act was sent, then its reply was lost: it may or may not have happened.

    The link has not sent it again. Raised by the backends for conditioning, tip cleaning,
    approaches and coarse moves; the `STM` device turns it into ``outcome == "unknown"``.

    Attributes
    ----------
    request
        The act, as sent (or described, for multi-command operations).
    cause
        What went wrong after sending, in words.
    """

    def __init__(self, request: str, cause: str) -> None:
        super().__init__(f"{request}: outcome unknown, the reply was lost after sending "
                         f"({cause}); not sent again")
        self.request, self.cause = request, cause


@dataclass(frozen=True)
class Outage:
    """A time the instrument could not be reached (or the connection was lost).

    Attributes
    ----------
    start, end
        Epoch seconds of the first failed attempt and of the recovery (or of giving up).
    cause
        The first error, in words, with the request it interrupted.
    """

    start: float
    end: float
    cause: str

    @property
    def duration_s(self) -> float:
        return self.end - self.start


class TCPConnection:
    """A client socket that opens lazily, reads exact byte counts and honours deadlines.

    Parameters
    ----------
    host, port
        The server.
    connect_timeout_s
        Limit on opening the connection.
    """

    def __init__(self, host: str, port: int, *,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.host, self.port = host, int(port)
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None

    @property
    def address(self) -> str:
        """``host:port``, as errors and logs name the server."""
        return f"{self.host}:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> socket.socket:
        """The open socket, connecting first if needed (`ConnectFailed` if that fails)."""
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), self.connect_timeout_s)
            except OSError as exc:
                raise ConnectFailed(f"cannot connect to {self.address}: {exc}") from exc
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
            log.warning("discarded %d stale bytes from %s: %r", len(stale), self.address,
                        stale[:80])
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


class _Outage:
    """An outage in progress: when it started, why, how many attempts failed since."""

    def __init__(self, start: float, monotonic_start: float, cause: str) -> None:
        self.start, self.monotonic_start, self.cause = start, monotonic_start, cause
        self.attempts = 1


class Link:
    """Requests over one `TCPConnection`, one at a time, with the read and act policies.

    Parameters
    ----------
    host, port
        The instrument server.
    outage_s
        How long a lost connection is re-tried before `InstrumentUnreachable`.
    retries
        How often a reply that did not come in time on an open connection is asked for again.
    retry_delay_s, max_retry_delay_s
        First pause before re-opening a lost connection; it doubles up to the maximum.
    connect_timeout_s
        Limit on opening a connection.
    sleep, clock, monotonic
        Injected for tests: the pause between attempts, the epoch clock of `Outage`, and the
        clock that measures how long an outage has lasted.

    Examples
    --------
    >>> link = Link("127.0.0.1", 50008, outage_s=60)
    >>> link.read("getparam(Range)", lambda: ask_and_parse())   # doctest: +SKIP
    """

    def __init__(self, host: str, port: int, *, outage_s: float = DEFAULT_OUTAGE_S,
                 retries: int = 3, retry_delay_s: float = RETRY_DELAY_S,
                 max_retry_delay_s: float = MAX_RETRY_DELAY_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if outage_s < 0 or retries < 0 or retry_delay_s < 0:
            raise ValueError(f"outage_s ({outage_s}), retries ({retries}) and retry_delay_s "
                             f"({retry_delay_s}) must not be negative")
        self.connection = TCPConnection(host, port, connect_timeout_s=connect_timeout_s)
        self.outage_s, self.retries = float(outage_s), int(retries)
        self.retry_delay_s = retry_delay_s
        self.max_retry_delay_s = max(max_retry_delay_s, retry_delay_s)
        self._sleep, self._clock, self._monotonic = sleep, clock, monotonic
        self._lock = threading.RLock()  # one request on the wire at a time, whatever the thread
        self._outages: list[Outage] = []
        self._outages_lock = threading.Lock()  # taken without waiting for a request to end
        self._closing = threading.Event()  # ends an outage wait at once
        self._sent = False

    @property
    def address(self) -> str:
        return self.connection.address

    def close(self) -> None:
        """Close the connection (a request waiting out an outage gives up first)."""
        self._closing.set()
        try:
            with self._lock:
                self.connection.close()
        finally:
            self._closing.clear()

    def take_outages(self) -> list[Outage]:
        """The outages that ended since the last call (oldest first), forgotten here."""
        with self._outages_lock:
            taken, self._outages = self._outages, []
        return taken

    def mark_sent(self) -> None:
        """Called by an act just before its acting bytes go out: from now on, never resend."""
        self._sent = True

    def read(self, label: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` (send and read a reply) until it succeeds, re-asking after errors."""
        return self._run(label, attempt, acting=False)

    def act(self, label: str, attempt: Callable[[], T]) -> T:
        """Run `attempt`, which calls `mark_sent` before acting; never again after that.

        A network error before `mark_sent` is retried as for reads; after it, the connection
        is re-opened and `OutcomeUnknown` raised.
        """
        return self._run(label, attempt, acting=True)

    # -- internals -------------------------------------------------------------------------
    def _run(self, label: str, attempt: Callable[[], T], *, acting: bool) -> T:
        with self._lock:
            outage: _Outage | None = None
            late_replies = 0
            while True:
                self._sent = False
                try:
                    self.connection.discard_stale()
                    result = attempt()
                except (MalformedReply, InstrumentError, UnsupportedRequest):
                    self.connection.close()
                    self._recovered(outage, label)  # the server answered: it is there
                    raise
                except OSError as exc:
                    self.connection.close()
                    if acting and self._sent:
                        self._recovered(outage, label)  # an earlier outage ended before sending
                        lost = None if isinstance(exc, TimeoutError) else self._begin(label, exc)
                        self._reconnect(label, lost)
                        raise OutcomeUnknown(label, str(exc)) from exc
                    if isinstance(exc, TimeoutError):
                        late_replies += 1  # the server is there but did not answer in time
                        log.warning("%s: no reply from %s in time (%d of %d re-asks used): %s",
                                    label, self.address, late_replies - 1, self.retries, exc)
                        if late_replies > self.retries:
                            self._recovered(outage, label)
                            raise TimeoutError(f"{label}: no reply in time from {self.address}"
                                               f" after {late_replies} attempts; last error: "
                                               f"{exc}") from exc
                        continue
                    outage = self._failed_again(label, outage, exc)
                else:
                    self._recovered(outage, label)
                    return result

    def _begin(self, label: str, exc: BaseException) -> _Outage:
        log.warning("%s: connection to %s lost (%s); retrying for up to %.0f s", label,
                    self.address, exc, self.outage_s)
        return _Outage(self._clock(), self._monotonic(), f"{label}: {exc}")

    def _failed_again(self, label: str, outage: _Outage | None,
                      exc: BaseException) -> _Outage:
        """Count a failed attempt (opening the outage on the first), then wait or give up."""
        if outage is None:
            outage = self._begin(label, exc)
        else:
            outage.attempts += 1
        self._wait_or_give_up(label, outage, exc)
        return outage

    def _wait_or_give_up(self, label: str, outage: _Outage, exc: BaseException) -> None:
        """Sleep before the next attempt, or raise once the outage has lasted too long."""
        waited_s = self._monotonic() - outage.monotonic_start
        if waited_s >= self.outage_s or self._closing.is_set():
            reason = "closed while waiting" if self._closing.is_set() else "gave up"
            self._record(Outage(outage.start, self._clock(),
                                f"{outage.cause} ({reason} after {waited_s:.1f} s)"))
            raise InstrumentUnreachable(
                f"{label}: the instrument at {self.address} was unreachable for {waited_s:.1f} s"
                f" ({outage.attempts} attempts; outage limit {self.outage_s:g} s); last error: "
                f"{exc}") from exc
        delay_s = min(self.retry_delay_s * 2 ** (outage.attempts - 1), self.max_retry_delay_s)
        self._sleep(min(delay_s, max(self.outage_s - waited_s, 0.0)))

    def _reconnect(self, label: str, outage: _Outage | None) -> None:
        """Open the connection again (nothing is sent), waiting out an outage."""
        while True:
            try:
                self.connection.open()
            except OSError as exc:
                outage = self._failed_again(label, outage, exc)
            else:
                self._recovered(outage, label)
                return

    def _record(self, outage: Outage) -> None:
        with self._outages_lock:
            self._outages.append(outage)

    def _recovered(self, outage: _Outage | None, label: str) -> None:
        if outage is None:
            return
        end = self._clock()
        self._record(Outage(outage.start, end, outage.cause))
        log.warning("%s: %s back after %.1f s (%d failed attempts)", label, self.address,
                    end - outage.start, outage.attempts)
