"""The LabVIEW client against a server that misbehaves: drops, late replies, malformed replies.

Every test talks to a real server on 127.0.0.1 whose replies are sabotaged on purpose; the
client must recover where it can and otherwise raise an error naming the request.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from deepspm_bluesky.devices import labview_stm
from deepspm_bluesky.devices.labview import LabVIEWBackend, MalformedReply
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.sim import SimulatedMicroscope

FAST = {"retry_delay_s": 0.01, "text_quiet_s": 0.005}
HANG_UP = None


@dataclass
class SendThenHangUp:
    """Send these bytes, then close the connection."""

    data: bytes


@dataclass
class InPieces:
    """Send these pieces one after the other, pausing between them."""

    pieces: list[bytes]
    pause_s: float


# sabotage(number of the request, request text, honest reply) -> what to send instead
Sabotage = Callable[[int, str, bytes], "bytes | SendThenHangUp | None"]


class FaultyServer(LabVIEWServer):
    """A LabVIEW server that runs every request, then lets `sabotage` decide what to send."""

    def __init__(self, sabotage: Sabotage, seed: int = 7) -> None:
        super().__init__(SimulatedMicroscope(seed=seed))
        self.sabotage = sabotage
        self.requests: list[str] = []

    def respond(self, conn: socket.socket, request: str) -> None:
        self.requests.append(request)
        reply = self.sabotage(len(self.requests), request, self.reply(request))
        if isinstance(reply, InPieces):
            for piece in reply.pieces:
                time.sleep(reply.pause_s)
                self.send(conn, piece)
            return
        if isinstance(reply, SendThenHangUp):
            self.send(conn, reply.data)
            reply = HANG_UP
        if reply is HANG_UP:
            raise ConnectionAbortedError("sabotage: hanging up")  # ends this client's session
        self.send(conn, reply)


def only_for(kind: str, fault: Callable[[bytes], bytes | None], times: int = 10**9) -> Sabotage:
    """Apply `fault` to the first `times` replies to requests of `kind`; others pass."""
    seen = []

    def sabotage(number: int, request: str, reply: bytes) -> bytes | None:
        if not request.startswith(kind) or len(seen) >= times:
            return reply
        seen.append(number)
        return fault(reply)

    return sabotage


def late(seconds: float) -> Callable[[bytes], bytes]:
    def fault(reply: bytes) -> bytes:
        time.sleep(seconds)
        return reply
    return fault


def nan_image(reply: bytes) -> bytes:
    rows, cols = struct.unpack(">ii", reply[:8])
    pixels = np.frombuffer(reply[8:], ">f4").copy()
    pixels[rows * cols // 2:] = np.nan  # the second half of the frame never came
    return reply[:8] + pixels.tobytes()


def halve_shape(reply: bytes) -> bytes:
    rows, cols = struct.unpack(">ii", reply[:8])
    return struct.pack(">ii", rows // 2, cols // 2) + reply[8:8 + rows * cols]


def serve(sabotage: Sabotage) -> FaultyServer:
    return FaultyServer(sabotage).start()


@pytest.fixture
def servers():
    started: list[FaultyServer] = []
    yield lambda sabotage: started.append(serve(sabotage)) or started[-1]
    for server in started:
        server.stop()


def scan(server: FaultyServer, **options) -> np.ndarray:
    backend = LabVIEWBackend(*server.address, **{**FAST, **options})
    try:
        return backend.scan(0, 0, 10e-9, 64)
    finally:
        backend.close()


# -- connection faults: recovered --------------------------------------------------------------
def test_a_survey_completes_when_the_server_hangs_up_on_every_fourth_request(RE, documents,
                                                                              servers):
    server = servers(lambda n, request, reply: HANG_UP if n % 4 == 0 else reply)
    stm = labview_stm(*server.address, **FAST)
    try:
        RE(autonomous_survey(stm, max_images=12))
    finally:
        stm.destroy()
    stop = [d for n, d in documents if n == "stop"][-1]
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == 12
    assert len(server.requests) > 12 * 4 // 3, "lost replies were asked for again"
    images = [d["data"]["stm_image"] for n, d in documents if n == "event"
              and "stm_image" in d["data"]]
    assert all(np.isfinite(image).all() for image in images)


def test_a_reply_later_than_the_scan_timeout_is_asked_for_again(servers):
    server = servers(only_for("scan", late(0.15), times=1))
    image = scan(server, timeouts_s={"scan": 0.1}, retry_delay_s=0.1)
    assert image.shape == (64, 64)
    assert sum(r.startswith("scan") for r in server.requests) >= 2, "asked for again"


def test_a_late_reply_within_the_timeout_is_accepted_without_a_retry(servers):
    server = servers(only_for("scan", late(0.05)))
    assert scan(server, timeouts_s={"scan": 2.0}).shape == (64, 64)
    assert len(server.requests) == 1


def test_each_request_kind_waits_as_long_as_its_own_timeout(servers):
    server = servers(lambda n, request, reply: late(0.1)(reply))
    backend = LabVIEWBackend(*server.address, timeouts_s={"scan": 2.0, "getparam": 0.02},
                             retries=0, **FAST)
    assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)
    with pytest.raises(TimeoutError, match=r"getparam\(Range\)"):
        backend.scan_range_m()
    backend.close()


def test_a_payload_truncated_once_is_scanned_again(servers):
    server = servers(only_for("scan", lambda reply: SendThenHangUp(reply[:1000]), times=1))
    assert np.isfinite(scan(server)).all()
    assert sum(r.startswith("scan") for r in server.requests) == 2


def test_a_text_reply_that_arrives_in_pieces_is_read_whole(servers):
    server = servers(only_for("getparam", lambda r: InPieces([r[:3], r[3:9], r[9:]], 0.02)))
    backend = LabVIEWBackend(*server.address, text_quiet_s=0.2)
    assert backend.scan_range_m() == 850e-9
    backend.close()


def test_bytes_beyond_a_reply_are_dropped_before_the_next_request(servers):
    server = servers(only_for("scan", lambda r: r + b"Range:1e-3", times=1))
    backend = LabVIEWBackend(*server.address, **FAST)
    assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)
    time.sleep(0.02)  # let the surplus arrive
    assert backend.scan_range_m() == 850e-9
    backend.close()


# -- connection faults: given up on, with a clear error ----------------------------------------
def test_a_server_that_always_hangs_up_mid_image_ends_in_an_error_naming_the_request(servers):
    server = servers(lambda n, request, reply: HANG_UP)
    with pytest.raises(ConnectionError, match=r"scan\(0,0,10n ,64\).*after 3 attempts"):
        scan(server, retries=2)
    assert len(server.requests) == 3


def test_a_payload_always_truncated_ends_in_an_error_saying_how_much_came(servers):
    server = servers(only_for("scan", lambda reply: SendThenHangUp(reply[:1000])))
    with pytest.raises(ConnectionError, match=r"scan\(.*truncated.*after 992 of 16384 bytes"):
        scan(server, retries=1)


def test_a_payload_that_stops_coming_ends_in_a_timeout_saying_how_much_came(servers):
    server = servers(only_for("scan", lambda reply: reply[:1000]))
    with pytest.raises(TimeoutError, match=r"scan\(.*got 992 of 16384 bytes"):
        scan(server, retries=0, timeouts_s={"scan": 0.1})


def test_a_server_that_is_always_late_ends_in_a_timeout_naming_the_request(servers):
    server = servers(lambda n, request, reply: late(0.08)(reply))
    backend = LabVIEWBackend(*server.address, timeouts_s={"getparam": 0.03}, retries=1, **FAST)
    with pytest.raises(TimeoutError, match=r"getparam\(zRange\).*after 2 attempts"):
        backend.z_range_m()
    backend.close()


def test_a_refused_connection_ends_in_an_error_naming_the_request():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once the probe is closed
    backend = LabVIEWBackend("127.0.0.1", port, retries=1, **FAST)
    with pytest.raises(ConnectionError, match=r"getparam\(Range\).*2 attempts"):
        backend.scan_range_m()


# -- malformed replies: a clear error, nothing recorded ----------------------------------------
MALFORMED = {
    "bad shape header": ("scan", lambda r: b"\xff\xff\xff\xfe" + r[4:], "bad shape header"),
    "shape of text": ("scan", lambda r: b"error: no tip", "bad shape header b'erro"),
    "refused scan": ("scan", lambda r: struct.pack(">ii", 0, 0), "bad shape header: 0 x 0"),
    "wrong size": ("scan", halve_shape, "wrong size: the server announced a 32 x 32"),
    "NaN image": ("scan", nan_image, "NaN image: 2048 of 4096 pixels"),
    "non-numeric range": ("getparam", lambda r: b"Range:wide", "expected 'Range:<metres>'"),
    "other parameter": ("getparam", lambda r: b"zRange:1e-6", "expected 'Range:<metres>'"),
    "non-numeric crashes": ("movearea", lambda r: b"Approach area changed", "N crashes"),
    "non-binary clean": ("tipclean", lambda r: b"maybe", "expected '1' or '0'"),
    "binary text": ("getparam", lambda r: b"Range:\xff\xfe", "not ASCII"),
}
CALLS = {
    "scan": lambda b: b.scan(0, 0, 10e-9, 64), "getparam": lambda b: b.scan_range_m(),
    "movearea": lambda b: b.move_area(), "tipclean": lambda b: b.tip_clean(0, 0),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_reply_raises_an_error_naming_the_request_and_the_reply(servers, case):
    kind, fault, message = MALFORMED[case]
    server = servers(only_for(kind, fault))
    backend = LabVIEWBackend(*server.address, **FAST)
    with pytest.raises(MalformedReply, match=rf"^{kind}\(.*{re.escape(message)}"):
        CALLS[kind](backend)
    assert len(server.requests) == 1, "a malformed reply is not retried"
    assert not backend.connection.is_open, "a stream that went wrong is not reused"


def test_the_connection_after_a_malformed_reply_serves_the_next_request_cleanly(servers):
    server = servers(only_for("scan", halve_shape, times=1))
    backend = LabVIEWBackend(*server.address, **FAST)
    with pytest.raises(MalformedReply):
        backend.scan(0, 0, 10e-9, 64)
    assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)
    backend.close()


def test_a_nan_image_mid_survey_stops_the_run_and_is_never_recorded(RE, documents, servers):
    scans = []

    def sabotage(number: int, request: str, reply: bytes) -> bytes:
        if request.startswith("scan"):
            scans.append(number)
            if len(scans) == 4:
                return nan_image(reply)
        return reply

    stm = labview_stm(*servers(sabotage).address, **FAST)
    try:
        with pytest.raises(Exception) as raised:
            RE(autonomous_survey(stm, max_images=10))
    finally:
        stm.destroy()
    assert "NaN image" in repr(raised.value) + repr(raised.value.__cause__)
    stop = [d for n, d in documents if n == "stop"][-1]
    assert stop["exit_status"] == "fail"
    images = [d["data"]["stm_image"] for n, d in documents if n == "event"
              and "stm_image" in d["data"]]
    assert len(images) == 3
    assert all(np.isfinite(image).all() for image in images)
