"""The link both network backends share: outages waited out with backoff, acts sent once.

Real sockets on 127.0.0.1; an injected clock makes a 10-minute outage take no time.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from deepspm_bluesky.devices import InstrumentUnreachable, MalformedReply, Outage, OutcomeUnknown
from deepspm_bluesky.devices.transport import DEFAULT_OUTAGE_S, Link


class FakeClock:
    """Epoch and monotonic time that move only when slept."""

    def __init__(self) -> None:
        self.now, self.pauses = 1_700_000_000.0, []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def link_on_clock(port: int, clock: FakeClock, **options) -> Link:
    return Link("127.0.0.1", port, sleep=clock.sleep, clock=clock.time,
                monotonic=clock.monotonic, **options)


class HangUpServer:
    """Accepts connections; reads one request from each and closes without replying."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(100)
                if data:
                    self.received.append(data)

    def close(self) -> None:
        self.listener.close()


def ask(link: Link, request: bytes, *, act: bool = False) -> bytes:
    """Send `request` over the link and read a reply (acts mark themselves sent)."""
    def attempt() -> bytes:
        deadline = time.monotonic() + 5.0
        link.connection.open()
        if act:
            link.mark_sent()
        link.connection.sendall(request, deadline, request.decode())
        reply = link.connection.recv_some(deadline, request.decode())
        if not reply:
            raise ConnectionError(f"{request.decode()}: the connection closed before any reply")
        return reply

    return (link.act if act else link.read)(request.decode(), attempt)


def test_a_lost_server_is_retried_with_doubling_pauses_up_to_2_s_for_10_minutes():
    clock, port = FakeClock(), closed_port()
    link = link_on_clock(port, clock)
    assert link.outage_s == DEFAULT_OUTAGE_S == 600.0
    with pytest.raises(InstrumentUnreachable, match=rf"getparam\(Range\): the instrument at "
                       rf"127\.0\.0\.1:{port} was unreachable for 600\.0 s \(\d+ attempts; "
                       r"outage limit 600 s\); last error: cannot connect"):
        ask(link, b"getparam(Range)")
    assert clock.pauses[:4] == [0.5, 1.0, 2.0, 2.0]
    assert max(clock.pauses) == 2.0
    assert sum(clock.pauses) == pytest.approx(600.0)
    (outage,) = link.take_outages()
    assert outage.duration_s == pytest.approx(600.0)
    assert "getparam(Range)" in outage.cause and "gave up after 600.0 s" in outage.cause


def test_an_outage_is_a_frozen_record_of_start_end_and_cause():
    outage = Outage(start=10.0, end=18.5, cause="scan(...): connection refused")
    assert outage.duration_s == 8.5
    with pytest.raises(AttributeError):
        outage.end = 20.0


def test_an_act_whose_connection_drops_after_sending_is_attempted_once():
    server = HangUpServer()
    link = Link("127.0.0.1", server.port, outage_s=2.0, retry_delay_s=0.01)
    try:
        with pytest.raises(OutcomeUnknown) as raised:
            ask(link, b"tipshaping(0,0,0,4,200m)", act=True)
        assert raised.value.request == "tipshaping(0,0,0,4,200m)"
        assert "closed before any reply" in raised.value.cause
        assert link.connection.is_open, "reconnected before reporting"
        assert server.received == [b"tipshaping(0,0,0,4,200m)"]
    finally:
        link.close()
        server.close()


def test_a_read_whose_connection_drops_is_asked_again_until_the_limit():
    server = HangUpServer()
    link = Link("127.0.0.1", server.port, outage_s=0.2, retry_delay_s=0.01)
    try:
        with pytest.raises(InstrumentUnreachable):
            ask(link, b"getparam(Range)")
        assert len(server.received) >= 3 and set(server.received) == {b"getparam(Range)"}
    finally:
        link.close()
        server.close()


def test_an_act_that_cannot_connect_yet_is_retried_because_nothing_was_sent():
    clock, port = FakeClock(), closed_port()
    link = link_on_clock(port, clock, outage_s=5.0)
    with pytest.raises(InstrumentUnreachable, match="unreachable for 5.0 s"):
        ask(link, b"approach(f)", act=True)
    assert len(clock.pauses) > 2, "connecting was tried again and again"


def test_a_malformed_reply_is_never_retried_and_the_stream_is_dropped():
    server = HangUpServer()
    link = Link("127.0.0.1", server.port, outage_s=2.0)
    attempts = []

    def attempt() -> None:
        attempts.append(1)
        link.connection.open()
        raise MalformedReply("getparam(Range): expected '<label>:<metres>', got 'wide'")

    try:
        with pytest.raises(MalformedReply):
            link.read("getparam(Range)", attempt)
        assert attempts == [1] and not link.connection.is_open
    finally:
        server.close()


def test_negative_limits_are_refused():
    with pytest.raises(ValueError, match=r"outage_s \(-1\)"):
        Link("127.0.0.1", 1, outage_s=-1)


def test_closing_the_link_ends_an_outage_wait_and_outages_can_be_taken_meanwhile():
    link = Link("127.0.0.1", closed_port(), outage_s=600.0, retry_delay_s=0.05,
                max_retry_delay_s=0.1)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            ask(link, b"getparam(Range)")
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    waiting = threading.Thread(target=read)
    waiting.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert link.take_outages() == [], "not blocked by the request waiting out its outage"
    link.close()
    waiting.join(timeout=5)
    assert not waiting.is_alive() and time.monotonic() - started < 2.0
    (error,) = errors
    assert isinstance(error, InstrumentUnreachable)
    assert "closed while waiting" in link.take_outages()[0].cause
