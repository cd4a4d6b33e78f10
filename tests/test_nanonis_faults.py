"""The Nanonis backend against a fake controller that misbehaves on purpose, over TCP."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from faults import count_calls

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.devices import (
    InstrumentError,
    InstrumentUnreachable,
    MalformedReply,
    OutcomeUnknown,
    nanonis_stm,
)
from deepspm_bluesky.devices.nanonis import NanonisBackend
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers.nanonis import HEADER, NanonisServer
from deepspm_bluesky.sim import SimulatedMicroscope

FAST = {"retry_delay_s": 0.01, "slack_s": 0.0, "approach_poll_s": 0.01, "outage_s": 2.0}
HANG_UP = None


@dataclass
class SendThenHangUp:
    data: bytes


# sabotage(number of the command, command name, honest response) -> what to send instead
Sabotage = Callable[[int, str, bytes], "bytes | SendThenHangUp | None"]


class FaultyServer(NanonisServer):
    """A fake controller that runs every command, then lets `sabotage` decide what to send."""

    def __init__(self, sabotage: Sabotage, seed: int = 7) -> None:
        super().__init__(SimulatedMicroscope(seed=seed))
        self.sabotage = sabotage
        self.commands_seen: list[str] = []

    def respond(self, conn: socket.socket, reply: bytes) -> None:
        command = reply[:32].rstrip(b"\0").decode()
        self.commands_seen.append(command)
        out = self.sabotage(len(self.commands_seen), command, reply)
        if isinstance(out, SendThenHangUp):
            self.send(conn, out.data)
            out = HANG_UP
        if out is HANG_UP:
            raise ConnectionAbortedError("sabotage: hanging up")
        self.send(conn, out)


def only_for(command: str, fault: Callable[[bytes], object], times: int = 10**9) -> Sabotage:
    seen: list[int] = []

    def sabotage(number: int, name: str, reply: bytes):
        if name != command or len(seen) >= times:
            return reply
        seen.append(number)
        return fault(reply)

    return sabotage


def late(seconds: float) -> Callable[[bytes], bytes]:
    def fault(reply: bytes) -> bytes:
        time.sleep(seconds)
        return reply
    return fault


def with_body(reply: bytes, body: bytes, name: bytes | None = None) -> bytes:
    return HEADER.pack(name or reply[:32], len(body), 0, 0) + body


def split_frame(reply: bytes) -> tuple[bytes, int, int, np.ndarray, bytes]:
    """(channel name part, rows, cols, data, tail) of a Scan.FrameDataGrab response."""
    body = reply[HEADER.size:]
    offset = 4 + struct.unpack_from(">i", body)[0]
    rows, cols = struct.unpack_from(">ii", body, offset)
    data = np.frombuffer(body, ">f4", rows * cols, offset + 8).copy()
    return body[:offset], rows, cols, data, body[offset + 8 + 4 * rows * cols:]


def nan_frame(reply: bytes) -> bytes:
    name, rows, cols, data, tail = split_frame(reply)
    data[rows * cols // 2:] = np.nan  # the scan stopped half-way
    return with_body(reply, name + struct.pack(">ii", rows, cols) + data.tobytes() + tail)


def quarter_frame(reply: bytes) -> bytes:
    name, rows, cols, data, tail = split_frame(reply)
    return with_body(reply, name + struct.pack(">ii", rows // 2, cols // 2)
                     + data[: rows * cols // 4].tobytes() + tail)


def overstated_frame(reply: bytes) -> bytes:
    name, rows, cols, data, tail = split_frame(reply)
    return with_body(reply, name + struct.pack(">ii", rows * 2, cols) + data.tobytes() + tail)


def frame_error(reply: bytes) -> bytes:
    name, rows, cols, data, _ = split_frame(reply)
    text = b"scan aborted by the user"
    return with_body(reply, name + struct.pack(">ii", rows, cols) + data.tobytes()
                     + struct.pack(">IIi", 1, 1, len(text)) + text)


@pytest.fixture
def servers():
    started: list[FaultyServer] = []

    def start(sabotage: Sabotage) -> FaultyServer:
        started.append(FaultyServer(sabotage).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def connect():
    opened: list[NanonisBackend] = []

    def make(server: FaultyServer, **options) -> NanonisBackend:
        opened.append(NanonisBackend(*server.address, **{**FAST, **options}))
        return opened[-1]

    yield make
    for backend in opened:
        backend.close()


def primary_images(documents) -> list[np.ndarray]:
    return [np.asarray(d["data"]["stm_image"]) for n, d in documents
            if n == "event" and "stm_image" in d["data"]]


# -- recovered ------------------------------------------------------------------------------------
def test_a_survey_completes_when_the_controller_hangs_up_on_every_seventh_command(
        RE, documents, servers):
    server = servers(lambda n, name, reply: HANG_UP if n % 7 == 0 else reply)
    stm = nanonis_stm(*server.address, **FAST)
    try:
        RE(autonomous_survey(stm, max_images=10))
    finally:
        stm.destroy()
    stop = [d for n, d in documents if n == "stop"][-1]
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == 10
    assert all(np.isfinite(image).all() for image in primary_images(documents))


def test_a_reply_later_than_the_timeout_is_asked_for_again(servers, connect):
    server = servers(only_for("Piezo.RangeGet", late(0.15), times=1))
    backend = connect(server, timeouts_s={"command": 0.1}, retry_delay_s=0.1)
    assert backend.scan_range_m() == 850e-9
    assert server.commands_seen.count("Piezo.RangeGet") >= 2, "the late reply was asked for again"


def test_a_frame_truncated_once_is_scanned_again(servers, connect):
    server = servers(only_for("Scan.FrameDataGrab", lambda r: SendThenHangUp(r[:500]), times=1))
    assert np.isfinite(connect(server).scan(0, 0, 10e-9, 64)).all()
    assert server.commands_seen.count("Scan.Action") == 2


# -- given up on, with a clear error ------------------------------------------------------------
def test_a_frame_always_truncated_ends_after_the_outage_limit_naming_the_scan(servers, connect):
    server = servers(only_for("Scan.FrameDataGrab", lambda r: SendThenHangUp(r[:500])))
    with pytest.raises(InstrumentUnreachable, match=r"scan of 64 px.*unreachable for 0\.\d s.*"
                                                    r"Scan\.FrameDataGrab.*truncated"):
        connect(server, outage_s=0.2).scan(0, 0, 10e-9, 64)
    assert server.commands_seen.count("Scan.Action") >= 2, "scanned again until the limit"


def test_a_controller_that_is_always_late_ends_in_a_timeout_naming_the_operation(servers,
                                                                                connect):
    server = servers(only_for("Piezo.RangeGet", late(0.08)))
    with pytest.raises(TimeoutError, match=r"piezo range.*2 attempts.*Piezo\.RangeGet"):
        connect(server, timeouts_s={"command": 0.03}, retries=1).z_range_m()


MALFORMED = {
    "NaN image": (nan_frame, MalformedReply, "NaN image: 2048 of 4096 pixels"),
    "wrong size": (quarter_frame, MalformedReply, "wrong size: 32 x 32 for a 64 x 64 scan"),
    "overstated size": (overstated_frame, MalformedReply, "128 x 64 floats do not fit"),
    "error section": (frame_error, InstrumentError, "scan aborted by the user"),
    "other command": (lambda r: with_body(r, r[40:], b"Scan.StatusGet"), MalformedReply,
                      "the reply was for another command"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_frame_raises_an_error_naming_the_command(servers, connect, case):
    fault, error, message = MALFORMED[case]
    server = servers(only_for("Scan.FrameDataGrab", fault))
    backend = connect(server)
    with pytest.raises(error, match=rf"Scan\.FrameDataGrab.*{message}"):
        backend.scan(0, 0, 10e-9, 64)
    assert server.commands_seen.count("Scan.Action") == 1, "not retried"
    assert not backend.connection.is_open


def test_a_reply_for_another_command_to_a_small_request_is_named(servers, connect):
    server = servers(only_for("Piezo.RangeGet", lambda r: with_body(r, r[40:], b"Bias.Get")))
    with pytest.raises(MalformedReply, match=r"Piezo\.RangeGet: the reply was for another"):
        connect(server).scan_range_m()


def test_a_partial_frame_mid_survey_stops_the_run_and_is_never_recorded(RE, documents, servers):
    server = servers(lambda n, name, reply: reply)
    grabs: list[int] = []

    def sabotage(number: int, name: str, reply: bytes) -> bytes:
        if name == "Scan.FrameDataGrab":
            grabs.append(number)
            if len(grabs) == 3:
                return nan_frame(reply)
        return reply

    server.sabotage = sabotage
    stm = nanonis_stm(*server.address, **FAST)
    try:
        with pytest.raises(Exception) as raised:
            RE(autonomous_survey(stm, max_images=8))
    finally:
        stm.destroy()
    assert "NaN image" in repr(raised.value) + repr(raised.value.__cause__)
    stop = [d for n, d in documents if n == "stop"][-1]
    assert stop["exit_status"] == "fail"
    images = primary_images(documents)
    assert len(images) == 2
    assert all(np.isfinite(image).all() for image in images)


# -- acts: sent at most once ------------------------------------------------------------------
TABLE = {a.name: a for a in load_actions()}
ACTS = {  # acting command: (backend call, simulator method that does it)
    "Bias.Pulse": (lambda b: b.condition(TABLE["pulse +4 V"], 1e-9, 0), "condition"),
    "TipShaper.Start": (lambda b: b.condition(TABLE["dip -1.2 nm"], 1e-9, 0), "condition"),
    "TipShaper.Start (clean)": (lambda b: b.tip_clean(0, 0), "tip_clean"),
    "AutoApproach.OnOffSet": (lambda b: (b.withdraw(), b.approach()), "approach"),
    "Motor.StartMove": (lambda b: b.move_area(), "move_area"),
}


@pytest.mark.parametrize("case", list(ACTS))
def test_an_acting_command_whose_connection_drops_after_it_is_received_is_never_sent_again(
        servers, connect, case):
    command = case.split(" ")[0]
    server = servers(only_for(command, lambda reply: HANG_UP, times=1))
    call, method = ACTS[case]
    acted = count_calls(server.microscope, method)
    backend = connect(server)
    with pytest.raises(OutcomeUnknown, match="outcome unknown.*not sent again"):
        call(backend)
    assert server.commands_seen.count(command) == 1, "received exactly once"
    assert len(acted) == 1, "the controller acted once, before the drop"
    assert backend.scan_range_m() == 850e-9, "reconnected"
    assert server.commands_seen.count(command) == 1


def test_a_drop_before_the_acting_command_repeats_only_the_safe_commands(servers, connect):
    server = servers(only_for("FolMe.XYPosSet", lambda reply: HANG_UP, times=1))
    acted = count_calls(server.microscope, "condition")
    connect(server).condition(TABLE["pulse +4 V"], 1e-9, 0)
    assert server.commands_seen == ["FolMe.XYPosSet", "FolMe.XYPosSet", "Bias.Pulse"]
    assert len(acted) == 1


def test_the_device_finishes_a_pulse_of_unknown_outcome_and_says_so(servers):
    server = servers(only_for("Bias.Pulse", lambda reply: HANG_UP, times=1))
    stm = nanonis_stm(*server.address, **FAST)
    try:
        stm.conditioner.set("pulse +4 V").wait(timeout=10)
        assert stm.conditioner.outcome.get() == "unknown"
        assert stm.conditioner.last_action.get() == "pulse +4 V"
    finally:
        stm.destroy()
    assert server.commands_seen.count("Bias.Pulse") == 1
