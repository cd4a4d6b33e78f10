"""The LabVIEW client against a server that misbehaves: drops, late replies, malformed replies.

Every test talks to a real server on 127.0.0.1 whose replies are sabotaged on purpose; the
client must recover where it can (reads are asked again, acts never), and otherwise raise an
error naming the request.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from faults import count_calls

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.devices import InstrumentUnreachable, OutcomeUnknown, labview_stm
from deepspm_bluesky.devices.labview import LabVIEWBackend, MalformedReply
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.sim import SimulatedMicroscope

FAST = {"retry_delay_s": 0.01, "text_quiet_s": 0.005, "outage_s": 2.0}
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

    def __init__(self, sabotage: Sabotage, seed: int = 7, port: int = 0) -> None:
        super().__init__(SimulatedMicroscope(seed=seed), port=port)
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
        outages = stm.take_outages()
    finally:
        stm.destroy()
    stop = [d for n, d in documents if n == "stop"][-1]
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == 12
    assert len(server.requests) > 12 * 4 // 3, "lost replies were asked for again"
    outages_descriptors = {d["uid"] for n, d in documents
                           if n == "descriptor" and d["name"] == "outages"}
    recorded = [d for n, d in documents if n == "event" and d["descriptor"] in outages_descriptors]
    assert len(outages) + len(recorded) >= len(server.requests) // 4 - 1, \
        "each hang-up was reported (by the device, or recorded in the run by the plan)"
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
def test_a_server_that_always_hangs_up_ends_after_the_outage_limit_naming_server_and_wait(
        servers):
    server = servers(lambda n, request, reply: HANG_UP)
    started = time.monotonic()
    with pytest.raises(InstrumentUnreachable, match=r"scan\(0,0,10n ,64\): the instrument at "
                       rf"127\.0\.0\.1:{server.address[1]} was unreachable for 0\.[3-9] s"):
        scan(server, outage_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert len(server.requests) >= 2, "asked again until the limit"


def test_a_payload_always_truncated_ends_in_an_error_saying_how_much_came(servers):
    server = servers(only_for("scan", lambda reply: SendThenHangUp(reply[:1000])))
    with pytest.raises(InstrumentUnreachable, match=r"scan\(.*truncated.*after 992 of 16384 "
                                                    "bytes"):
        scan(server, outage_s=0.1)


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


def test_a_refused_connection_ends_in_an_error_naming_the_request_and_the_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once the probe is closed
    backend = LabVIEWBackend("127.0.0.1", port, **{**FAST, "outage_s": 0.1})
    with pytest.raises(InstrumentUnreachable, match=rf"getparam\(Range\): the instrument at "
                       rf"127\.0\.0\.1:{port} .*cannot connect to 127\.0\.0\.1:{port}"):
        backend.scan_range_m()


# -- malformed replies: a clear error, nothing recorded ----------------------------------------
MALFORMED = {
    "bad shape header": ("scan", lambda r: b"\xff\xff\xff\xfe" + r[4:], "bad shape header"),
    "shape of text": ("scan", lambda r: b"error: no tip", "bad shape header b'erro"),
    "refused scan": ("scan", lambda r: struct.pack(">ii", 0, 0), "bad shape header: 0 x 0"),
    "wrong size": ("scan", halve_shape, "wrong size: the server announced a 32 x 32"),
    "NaN image": ("scan", nan_image, "NaN image: 2048 of 4096 pixels"),
    "non-numeric range": ("getparam", lambda r: b"Range:wide", "expected '<label>:<metres>'"),
    "negative range": ("getparam", lambda r: b"Range:-1e-6", "a positive length"),
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


# -- acts: sent at most once -------------------------------------------------------------------
PULSE = next(a for a in load_actions() if a.name == "pulse +4 V")
ACTS = {  # request verb: (backend call, simulator method that does it)
    "tipshaping": (lambda b: b.condition(PULSE, 1e-9, 2e-9), "condition"),
    "tipclean": (lambda b: b.tip_clean(0, 0), "tip_clean"),
    "approach": (lambda b: b.approach(), "approach"),
    "movearea": (lambda b: b.move_area(), "move_area"),
}


@pytest.mark.parametrize("verb", list(ACTS))
def test_an_act_whose_connection_drops_after_it_is_received_is_never_sent_again(servers, verb):
    server = servers(only_for(verb, lambda reply: HANG_UP, times=1))
    call, method = ACTS[verb]
    acted = count_calls(server.microscope, method)
    backend = LabVIEWBackend(*server.address, **FAST)
    with pytest.raises(OutcomeUnknown, match=rf"^{verb}\(.*outcome unknown.*not sent again"):
        call(backend)
    assert [r.split("(")[0] for r in server.requests] == [verb], "received exactly once"
    assert len(acted) == 1, "the instrument acted once, before the drop"
    assert backend.connection.is_open, "reconnected, nothing resent"
    assert backend.scan_range_m() == 850e-9
    assert [r.split("(")[0] for r in server.requests] == [verb, "getparam"]
    assert len(acted) == 1
    backend.close()


def test_an_act_whose_reply_comes_too_late_is_not_sent_again(servers):
    server = servers(only_for("tipshaping", late(0.2)))
    backend = LabVIEWBackend(*server.address, timeouts_s={"tipshaping": 0.05}, **FAST)
    with pytest.raises(OutcomeUnknown, match="tipshaping.*no reply before the deadline"):
        backend.condition(PULSE, 0, 0)
    time.sleep(0.25)
    assert backend.scan_range_m() == 850e-9, "the late reply is not taken for the next one"
    assert [r.split("(")[0] for r in server.requests] == ["tipshaping", "getparam"]
    backend.close()


def test_an_act_waits_for_a_server_not_yet_listening_then_is_sent_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = LabVIEWBackend("127.0.0.1", port, **FAST)
    late_server: list[FaultyServer] = []

    def start_later() -> None:
        time.sleep(0.3)
        late_server.append(FaultyServer(lambda n, request, reply: reply, port=port).start())

    threading.Thread(target=start_later).start()
    try:
        backend.condition(PULSE, 0, 0)
        assert [r.split("(")[0] for r in late_server[0].requests] == ["tipshaping"]
        (outage,) = backend.take_outages()
        assert outage.duration_s >= 0.25 and "cannot connect" in outage.cause
    finally:
        backend.close()
        for server in late_server:
            server.stop()


COMPONENT_ACTS = {
    "tipshaping": ("conditioner", "pulse +4 V"),
    "tipclean": ("zctrl", "clean"),
    "approach": ("zctrl", "approach"),
    "movearea": ("coarse", "y+"),
}


@pytest.mark.parametrize("verb", list(COMPONENT_ACTS))
def test_the_device_finishes_an_act_of_unknown_outcome_and_says_so_in_outcome(servers, verb):
    server = servers(only_for(verb, lambda reply: HANG_UP, times=1))
    stm = labview_stm(*server.address, **FAST)
    component = getattr(stm, COMPONENT_ACTS[verb][0])
    try:
        component.set(COMPONENT_ACTS[verb][1]).wait(timeout=10)
        first = component.outcome.get()
        component.set(COMPONENT_ACTS[verb][1]).wait(timeout=10)
        second = component.outcome.get()
        read = stm.read()
    finally:
        stm.destroy()
    assert (first, second) == ("unknown", "done")
    assert [r.split("(")[0] for r in server.requests].count(verb) == 2, "once per set"
    assert component.outcome.name not in read, "outcome is omitted from readings"


# -- a CLI survey through an 8 s outage ------------------------------------------------------------
CLI = str(Path(sys.executable).parent / "deepspm-bluesky")
OUTAGE_S = 8.0


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    """``deepspm-bluesky labview-server`` on `port`, logging every exchange to `log_path`."""
    with open(log_path, "a") as log:
        return subprocess.Popen([CLI, "labview-server", "--port", str(port), "--seed", "1",
                                 "--verbose"], stdout=log, stderr=subprocess.STDOUT)


def wait_for_scans(log_path: Path, count: int, survey: subprocess.Popen, errors: Path,
                   timeout_s: float = 120.0) -> None:
    """Until the server has served `count` scans; fail with the survey's errors if it ended."""
    deadline = time.monotonic() + timeout_s
    while log_path.read_text().count("x 64 image") < count:
        assert survey.poll() is None, f"the survey ended early: {errors.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"fewer than {count} scans served in {timeout_s} s"
        time.sleep(0.1)


def test_a_cli_survey_of_150_images_waits_out_a_server_gone_for_8_s(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server_log, survey_err = tmp_path / "server.log", tmp_path / "survey.err"
    servers = [start_server(port, server_log)]  # the survey waits for it to listen
    catalog = tmp_path / "catalog"
    with open(survey_err, "w") as err:
        survey = subprocess.Popen(
            [CLI, "survey", "--backend", "labview", "--port", str(port), "--images", "150",
             "--catalog", str(catalog), "--outage-s", "120"],
            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_for_scans(server_log, 30, survey, survey_err)
        servers[0].kill()  # the instrument PC goes away mid-survey ...
        servers[0].wait()
        time.sleep(OUTAGE_S)
        servers.append(start_server(port, server_log))  # ... and comes back on the same port
        out, _ = survey.communicate(timeout=300)
    finally:
        survey.kill()
        for server in servers:
            server.kill()
            server.wait()
    errors = survey_err.read_text()
    assert survey.returncode == 0, errors[-3000:]
    from deepspm_bluesky.data import open_catalog

    run = open_catalog(str(catalog))[-1]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == 150
    back = [float(s) for s in re.findall(r"back after (\d+\.\d) s", errors)]
    assert max(back) >= OUTAGE_S - 0.5, "the device reported the outage"
    outages = run["outages"].read()
    assert float(outages["outage_s"].max()) >= OUTAGE_S - 0.5, "the run recorded the outage"
    assert all(str(cause) for cause in outages["cause"].values)
