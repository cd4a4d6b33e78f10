"""The Nanonis backend (on nanonis-spm) against the fake Nanonis server, over TCP on 127.0.0.1."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
from numpy.testing import assert_allclose
from real_files import nanonis_stm_sxm

from deepspm_bluesky.devices import InstrumentError, nanonis_stm, simulated_stm
from deepspm_bluesky.devices.nanonis import NanonisBackend
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers.nanonis import HEADER, NanonisServer, pack_string
from deepspm_bluesky.sim import SimulatedMicroscope
from deepspm_bluesky.spmfiles import read_sxm

SEED = 7
FAST = {"retry_delay_s": 0.01, "slack_s": 0.0, "approach_poll_s": 0.01}
SXM_DATA_MARKER = b"\x1a\x04"


class RecordingMicroscope(SimulatedMicroscope):
    """The simulator, noting each conditioning and cleaning it is asked for."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.actions: list[tuple] = []

    def condition(self, action, x_m, y_m):
        self.actions.append((action, x_m, y_m))
        super().condition(action, x_m, y_m)

    def tip_clean(self, x_m, y_m):
        self.actions.append(("clean", x_m, y_m))
        return super().tip_clean(x_m, y_m)


class RecordingServer(NanonisServer):
    """The fake controller, noting the name of every command it receives."""

    def __init__(self, microscope) -> None:
        super().__init__(microscope)
        self.received: list[str] = []

    def reply(self, name: bytes, body: bytes) -> bytes:
        self.received.append(name.rstrip(b"\0").decode())
        return super().reply(name, body)


class RoundingServer(RecordingServer):
    """A controller that rounds pixels per line to a multiple of 16, as Nanonis does."""

    def _buffer_set(self, channels, pixels, lines):
        rounded = max(16, round(pixels / 16) * 16)
        return super()._buffer_set(channels, rounded, rounded)


@pytest.fixture
def server():
    with RecordingServer(RecordingMicroscope(seed=SEED)) as running:
        yield running


@pytest.fixture
def backend(server):
    client = NanonisBackend(*server.address, **FAST)
    yield client
    client.close()


def message(command: str, body: bytes = b"") -> bytes:
    return HEADER.pack(command.encode(), len(body), 1, 0) + body


def exchange(address, command: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send one raw request; (response header, response body)."""
    with socket.create_connection(address, timeout=2) as raw:
        raw.sendall(message(command, body))
        reply = b""
        while len(reply) < HEADER.size or len(reply) < HEADER.size + struct.unpack_from(
                ">i", reply, 32)[0]:
            reply += raw.recv(65536)
    return reply[:HEADER.size], reply[HEADER.size:]


# -- the fake server speaks the Nanonis TCP protocol -------------------------------------------
def test_a_response_has_the_header_the_return_values_and_an_empty_error_section(server):
    header, body = exchange(server.address, "Bias.Get")
    name, size, _, _ = HEADER.unpack(header)
    assert name.rstrip(b"\0") == b"Bias.Get"
    assert size == len(body) == 4 + 8
    bias, status, error_size = struct.unpack(">fIi", body)
    assert (bias, status, error_size) == (1.0, 0, 0)


def test_an_unknown_command_is_answered_with_its_name_in_the_error_section(server):
    _, body = exchange(server.address, "Scan.StatusGet")
    status, size = struct.unpack_from(">Ii", body)
    assert status == 1
    assert b"unknown command 'Scan.StatusGet'" in body[8:8 + size]


def test_arguments_of_the_wrong_size_are_reported_not_run(server):
    _, body = exchange(server.address, "Bias.Set", b"\x00\x00")
    assert struct.unpack_from(">I", body)[0] == 1
    assert server.microscope.bias_v == 1.0


def test_the_fake_server_listens_on_localhost_by_default(server):
    assert server.address[0] == "127.0.0.1"


# -- the backend calls, as Nanonis commands ------------------------------------------------------
def test_a_scan_over_nanonis_equals_the_simulators_own_scan(backend):
    image = backend.scan(12.5e-9, -30e-9, 10e-9, 64)
    reference = SimulatedMicroscope(seed=SEED).scan(12.5e-9, -30e-9, 10e-9, 64)
    assert image.dtype == np.float32
    assert_allclose(image, reference, rtol=0, atol=1e-13)


def test_a_scan_is_frame_start_wait_and_grab_with_the_buffer_set_once(server, backend):
    backend.scan(0, 0, 10e-9, 64)
    backend.scan(20e-9, 0, 10e-9, 64)
    scan = ["Scan.FrameSet", "Scan.Action", "Scan.WaitEndOfScan", "Scan.FrameDataGrab"]
    buffer = ["Scan.BufferGet", "Scan.BufferSet", "Scan.BufferGet"]
    assert server.received == buffer + scan + scan
    assert server.state.frame == pytest.approx((20e-9, 0, 10e-9, 10e-9, 0), abs=1e-15)


def test_the_piezo_ranges_arrive_in_metres_without_float32_noise(backend):
    assert backend.scan_range_m() == 850e-9
    assert backend.z_range_m() == 1e-6


def test_a_pulse_is_a_bias_pulse_at_the_spot_with_absolute_bias(server, backend):
    pulse = simulated_stm().actions.get("pulse +4 V")
    backend.condition(pulse, 5e-9, -7e-9)
    (action, x, y), = server.microscope.actions
    assert (action.kind, x, y) == ("pulse", 5e-9, -7e-9)
    assert_allclose([action.bias_v, action.duration_s], [4.0, 0.2], rtol=1e-6)
    assert server.received == ["FolMe.XYPosSet", "Bias.Pulse"]


def test_a_dip_runs_the_tip_shaper_down_and_back_at_the_dip_bias(server, backend):
    dip = simulated_stm().actions.get("dip -1.2 nm")
    backend.condition(dip, 1e-9, 2e-9)
    (action, x, y), = server.microscope.actions
    assert (action.kind, x, y) == ("dip", 1e-9, 2e-9)
    assert_allclose([action.dip_nm, action.bias_v, action.duration_s], [-1.2, 0.02, 0.2],
                    rtol=1e-6)
    props = server.state.tip_shaper
    assert_allclose([props[3], props[5], props[7]], [-1.2e-9, 1.0, 1.2e-9], rtol=1e-6)
    assert props[10] == 1, "feedback is restored afterwards"


def test_a_stall_sends_nothing_to_the_controller(server, backend):
    backend.condition(simulated_stm().actions.get("stall"), 0, 0)
    assert server.received == []


def test_tip_clean_is_a_heavy_tip_shaper_dip(server, backend):
    assert backend.tip_clean(3e-9, 4e-9) is True
    assert server.microscope.actions == [("clean", 3e-9, 4e-9)]


def test_withdraw_and_auto_approach_move_the_tip_out_of_and_into_contact(server, backend):
    backend.withdraw()
    assert not server.microscope.tip.in_contact
    backend.approach()
    assert server.microscope.tip.in_contact
    assert server.received == ["ZCtrl.Withdraw", "AutoApproach.Open", "AutoApproach.OnOffSet",
                               "AutoApproach.OnOffGet", "ZCtrl.OnOffSet"]


def test_an_area_move_withdraws_steps_the_motor_and_approaches(server, backend):
    assert backend.move_area() == 0
    assert server.microscope.area_index == 1
    assert server.received[:2] == ["ZCtrl.Withdraw", "Motor.StartMove"]
    assert server.microscope.tip.in_contact


def test_an_area_move_leaves_the_simulator_as_its_own_move_does(backend):
    backend.move_area()
    reference = SimulatedMicroscope(seed=SEED)
    reference.move_area()
    assert_allclose(backend.scan(0, 0, 10e-9, 64), reference.scan(0, 0, 10e-9, 64), atol=1e-13)


def test_bias_and_setpoint_reach_the_controller_in_volts_and_amperes(server, backend):
    backend.set_bias(-1.5)
    backend.set_setpoint(50e-12)
    assert server.microscope.bias_v == -1.5
    assert server.microscope.setpoint_a == pytest.approx(50e-12, rel=1e-6)


def test_any_other_command_runs_with_the_backends_deadlines(server, backend):
    assert backend.command("Bias_Get") == [pytest.approx(1.0)]
    assert server.received == ["Bias.Get"]


def test_the_device_starts_from_the_controllers_scan_speed_and_sets_it(server):
    stm = nanonis_stm(*server.address, **FAST)
    try:
        assert stm.scanner.speed_nm_s.get() == pytest.approx(80.0)
        stm.scanner.speed_nm_s.put(200.0)
        assert server.microscope.scan_speed_m_s == pytest.approx(200e-9, rel=1e-6)
    finally:
        stm.destroy()


# -- errors from the controller -------------------------------------------------------------------
def test_an_error_section_raises_an_instrument_error_with_the_controllers_words(backend):
    with pytest.raises(InstrumentError, match=r"Scan\.FrameSet.*must be positive"):
        backend.scan(0, 0, 0.0, 64)


def test_a_z_channel_that_is_not_z_is_named_in_the_error(server):
    backend = NanonisBackend(*server.address, z_channel=0, **FAST)
    with pytest.raises(InstrumentError, match=r"channel 0 is 'Current \(A\)', not Z"):
        backend.scan(0, 0, 10e-9, 64)
    backend.close()


def test_pixels_the_controller_rounds_are_refused_before_scanning():
    with RoundingServer(RecordingMicroscope(seed=SEED)) as rounding:
        backend = NanonisBackend(*rounding.address, **FAST)
        with pytest.raises(InstrumentError, match="asked for 50 x 50 px, the controller set 48"):
            backend.scan(0, 0, 10e-9, 50)
        assert "Scan.Action" not in rounding.received
        backend.close()


def test_unknown_timeout_kinds_and_upward_cleaning_dips_are_refused():
    with pytest.raises(ValueError, match="unknown operation kinds"):
        NanonisBackend("127.0.0.1", 1, timeouts_s={"scna": 1.0})
    with pytest.raises(ValueError, match="clean_dip_m must be negative"):
        NanonisBackend("127.0.0.1", 1, clean_dip_m=5e-9)


# -- a survey, unchanged ------------------------------------------------------------------------
def test_a_survey_over_nanonis_records_the_same_data_as_on_the_simulator(RE, documents, server):
    direct = simulated_stm(seed=SEED)
    remote = nanonis_stm(*server.address, **FAST)
    try:
        RE(autonomous_survey(direct, max_images=15))
        RE(autonomous_survey(remote, max_images=15))
    finally:
        direct.destroy()
        remote.destroy()
    starts = [d["uid"] for n, d in documents if n == "start"]
    stops = {d["run_start"]: d for n, d in documents if n == "stop"}
    assert [stops[uid]["exit_status"] for uid in starts] == ["success", "success"]
    primary = {d["uid"]: d["run_start"] for n, d in documents
               if n == "descriptor" and d["name"] == "primary"}
    descriptors = [d for n, d in documents if n == "descriptor" and d["name"] == "primary"]
    assert [{k: (v["dtype"], v["shape"]) for k, v in d["data_keys"].items()}
            for d in descriptors][0] == {k: (v["dtype"], v["shape"])
                                         for k, v in descriptors[1]["data_keys"].items()}
    events = {uid: [] for uid in starts}
    for n, d in documents:
        if n == "event" and d["descriptor"] in primary:
            events[primary[d["descriptor"]]].append(d["data"])
    theirs, ours = (events[uid] for uid in starts)
    assert len(ours) == len(theirs) == 15
    assert [e["verdict"] for e in ours] == [e["verdict"] for e in theirs]
    assert_allclose(np.array([e["stm_image"] for e in ours]),
                    np.array([e["stm_image"] for e in theirs]), rtol=0, atol=1e-12)


# -- row order, against a real Nanonis recording -----------------------------------------------
class RecordedFrameServer(NanonisServer):
    """A fake controller whose frames are a real recording, rows as the controller recorded
    them (the order of the .sxm file), with the scan direction word it recorded them in."""

    def __init__(self, recorded: np.ndarray, direction_word: int) -> None:
        super().__init__(SimulatedMicroscope(seed=SEED))
        self.recorded, self.direction_word = recorded, direction_word

    def _frame_data_grab(self, channel: int, direction: int) -> bytes:
        rows, cols = self.recorded.shape
        return (pack_string("Z (m)") + struct.pack(">ii", rows, cols)
                + self.recorded.astype(">f4").tobytes() + struct.pack(">I", self.direction_word))


def recorded_current(path) -> np.ndarray:
    """The forward Current frame of the real file, rows exactly as stored (read here, raw)."""
    raw = path.read_bytes()
    start = raw.index(SXM_DATA_MARKER, raw.index(b":SCANIT_END:")) + len(SXM_DATA_MARKER)
    frames = np.frombuffer(raw, ">f4", 4 * 256 * 256, start).reshape(4, 256, 256)
    return frames[2]  # Z forward, Z backward, Current forward (DATA_INFO order), ...


@pytest.mark.parametrize(("word", "direction"), [(0, "down"), (1, "up")])
def test_a_grabbed_frame_comes_out_in_the_row_order_of_the_sxm_reader(word, direction):
    path = nanonis_stm_sxm()
    recorded = recorded_current(path)
    with RecordedFrameServer(recorded, word) as server:
        backend = NanonisBackend(*server.address, **FAST)
        image = backend.scan(0, 0, 4e-9, 256)
        backend.close()
    stored = read_sxm(path)
    assert stored.scan_direction == "down"
    if direction == "down":  # the file's own direction: the reader's image, pixel for pixel
        assert_allclose(image, stored.image("Current"), rtol=0, atol=0)
    else:
        assert_allclose(image, recorded, rtol=0, atol=0)
    assert_allclose(image[0 if direction == "down" else -1], recorded[-1], rtol=0, atol=0,
                    err_msg="the last recorded line is row 0 (bottom) of a downward scan, the "
                            "top row of an upward one")


def test_a_downward_scan_comes_out_in_the_same_row_order_as_an_upward_one(server):
    images = {}
    for direction in ("down", "up"):  # one client at a time, as the controller serves them
        backend = NanonisBackend(*server.address, scan_direction=direction, **FAST)
        images[direction] = backend.scan(0, 0, 10e-9, 64)
        backend.close()
        if direction == "down":
            assert not server.state.scan_up, "the fake controller scanned downwards"
            assert_allclose(server.state.image, images["down"][::-1], rtol=0, atol=0,
                            err_msg="it kept the lines as recorded, top line first")
    reference = SimulatedMicroscope(seed=SEED)  # the same two scans, directly
    assert_allclose(images["down"], reference.scan(0, 0, 10e-9, 64), rtol=0, atol=1e-13)
    assert_allclose(images["up"], reference.scan(0, 0, 10e-9, 64), rtol=0, atol=1e-13)
