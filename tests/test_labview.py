"""The DeepSPM LabVIEW protocol over real TCP on 127.0.0.1: wire format, server, client, survey."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.devices import UnsupportedRequest, labview_stm, simulated_stm
from deepspm_bluesky.devices.backend import scan_duration_s
from deepspm_bluesky.devices.labview import InstrumentError, LabVIEWBackend
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers import labview_wire as wire
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.sim import SimulatedMicroscope

SEED = 7
FAST = {"retry_delay_s": 0.01, "text_quiet_s": 0.005}
OURS = {**FAST, "extensions": ("withdraw", "setparam")}  # what our labview-server has


class DeepSPMStyleServer(LabVIEWServer):
    """Answers as DeepSPM's own test server does: every getparam with ``Range:<metres>``,
    and any request outside DeepSPM's protocol by failing (it hangs up)."""

    def __init__(self, microscope) -> None:
        super().__init__(microscope)
        self.verbs: list[str] = []

    def respond(self, conn: socket.socket, request: str) -> None:
        verb = request.split("(", 1)[0]
        self.verbs.append(verb)
        if verb not in wire.ORIGINAL_REQUESTS:
            raise ConnectionAbortedError(f"DeepSPM's test server fails on {request!r}")
        if verb == "getparam":
            name = wire.parse_request(request)[1][0]
            value = {"Range": self.microscope.scan_range_m,
                     "zRange": self.microscope.z_range_m}[name]()
            self.send(conn, f"Range:{value!r}".encode())
            return
        super().respond(conn, request)


@pytest.fixture
def server():
    with LabVIEWServer(SimulatedMicroscope(seed=SEED)) as running:
        yield running


@pytest.fixture
def backend(server):
    client = LabVIEWBackend(*server.address, **OURS)
    yield client
    client.close()


@pytest.fixture
def deepspm_server():
    with DeepSPMStyleServer(SimulatedMicroscope(seed=SEED)) as running:
        yield running


def runs_by_uid(documents) -> dict[str, list[tuple[str, dict]]]:
    """The documents of each run, keyed by the run's start uid."""
    runs: dict[str, list] = {}
    run_of_descriptor: dict[str, str] = {}
    for name, doc in documents:
        if name == "start":
            uid = doc["uid"]
        elif name == "event":
            uid = run_of_descriptor[doc["descriptor"]]
        else:
            uid = doc["run_start"]
        if name == "descriptor":
            run_of_descriptor[doc["uid"]] = uid
        runs.setdefault(uid, []).append((name, doc))
    return runs


def stream(docs, name: str) -> list[dict]:
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == name}
    return [d for n, d in docs if n == "event" and d["descriptor"] in descriptors]


# -- wire format --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("-1.2n", -1.2e-9), ("20m", 0.02), ("200m", 0.2), ("4", 4.0), ("8.5e-07", 8.5e-7),
    (" 10n ", 1e-8), ("25p", 25e-12), ("-8", -8.0),
])
def test_numbers_are_read_with_their_si_suffix(text, value):
    assert_allclose(wire.parse_number(text), value, rtol=1e-12)


@pytest.mark.parametrize("text", ["", "abc", "1.2x", "n", "1..2n"])
def test_a_non_number_is_refused_with_its_text_in_the_message(text):
    with pytest.raises(ValueError, match="not a number"):
        wire.parse_number(text)


def test_requests_are_written_as_the_reference_client_writes_them():
    assert wire.scan_request(12.5e-9, -3e-9, 10e-9, 64) == "scan(12.5n,-3n,10n ,64)"
    assert wire.tipshaping_request(0, 0, -1.2e-9, 0.02, 0.2) == "tipshaping(0,0,-1.2n,20m,200m)"
    assert wire.tipshaping_request(1e-9, 0, 0, 4, 0.2) == "tipshaping(1n,0,0,4,200m)"


def test_a_length_survives_the_trip_through_text_to_the_picometre():
    for value in (123.456789e-9, -424.99e-9, 1e-12):
        assert_allclose(wire.parse_number(wire.format_nano(value)), value, atol=1e-18)


# -- server --------------------------------------------------------------------------------
def test_the_server_listens_on_localhost_by_default(server):
    assert server.address[0] == "127.0.0.1"


def test_the_server_answers_an_unknown_request_with_an_error_text(server):
    with socket.create_connection(server.address, timeout=2) as raw:
        raw.sendall(b"bogus(1)")
        assert raw.recv(200).startswith(b"error: unknown request 'bogus'")


def test_the_server_survives_clients_that_disconnect_mid_request(server, backend):
    with socket.create_connection(server.address, timeout=2) as raw:
        raw.sendall(b"scan(0n,0n,10")  # never finished
    with socket.create_connection(server.address, timeout=2) as raw:
        raw.sendall(b"scan(0n,0n,10n ,64)")
        raw.recv(10)  # leave with most of the image unread
    assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)


def test_the_server_serves_one_client_at_a_time(server):
    first = socket.create_connection(server.address, timeout=2)
    first.sendall(b"getparam(Range)")
    assert first.recv(100) == b"Range:8.5e-07"
    with socket.create_connection(server.address, timeout=2) as second:
        second.sendall(b"getparam(zRange)")
        second.settimeout(0.2)
        with pytest.raises(TimeoutError):
            second.recv(100)
        first.close()
        second.settimeout(2)
        assert second.recv(100) == b"zRange:1e-06"


# -- client against the server ---------------------------------------------------------------
def test_a_scan_over_the_wire_equals_the_simulators_own_scan(backend):
    image = backend.scan(12.5e-9, -30e-9, 10e-9, 64)
    reference = SimulatedMicroscope(seed=SEED).scan(12.5e-9, -30e-9, 10e-9, 64)
    assert image.dtype == np.float32
    assert_allclose(image, reference, rtol=0, atol=1e-13)


def test_ranges_come_from_getparam_in_metres(backend):
    assert backend.scan_range_m() == pytest.approx(850e-9)
    assert backend.z_range_m() == pytest.approx(1e-6)


def test_every_action_of_the_table_reaches_the_simulator_with_its_values(server, backend):
    calls = []
    original = server.microscope.condition
    server.microscope.condition = lambda a, x, y: (calls.append((a, x, y)), original(a, x, y))
    table = load_actions()
    for action in table:
        backend.condition(action, 5e-9, -7e-9)
    assert [c[0].kind for c in calls] == [a.kind for a in table]
    for (sent, x, y), action in zip(calls, table, strict=True):
        assert_allclose([sent.dip_nm, sent.bias_v, sent.duration_s, x, y],
                        [action.dip_nm, action.bias_v if action.kind != "stall" else 0,
                         action.duration_s if action.kind != "stall" else 0, 5e-9, -7e-9],
                        atol=1e-12)


def test_tip_clean_approach_withdraw_and_area_moves_change_the_simulator(server, backend):
    backend.withdraw()
    assert not server.microscope.tip.in_contact
    backend.approach()
    assert server.microscope.tip.in_contact
    assert backend.tip_clean(0, 0) is True
    assert backend.move_area() == 0
    assert server.microscope.area_index == 1


def test_an_area_move_reports_the_crashes_and_leaves_the_simulator_as_its_own_move(backend):
    reference = SimulatedMicroscope(seed=SEED)
    assert backend.move_area() == reference.move_area()
    assert_allclose(backend.scan(0, 0, 10e-9, 64), reference.scan(0, 0, 10e-9, 64), atol=1e-13)


def test_bias_and_setpoint_reach_the_simulator(server, backend):
    backend.set_bias(-1.5)
    backend.set_setpoint(50e-12)
    assert server.microscope.bias_v == -1.5
    assert server.microscope.setpoint_a == 50e-12


def test_a_refused_request_raises_an_instrument_error_naming_it(backend):
    with pytest.raises(InstrumentError, match=r"tipshaping\(.*dip depth must be <= 0"):
        backend._text("tipshaping(0,0,1n,0,0)")


def test_the_servers_import_neither_bluesky_nor_ophyd():
    code = ("import sys, deepspm_bluesky.servers.labview, deepspm_bluesky.servers.nanonis;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bluesky', 'ophyd')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_an_unknown_timeout_kind_is_refused():
    with pytest.raises(ValueError, match="unknown request kinds"):
        LabVIEWBackend("127.0.0.1", 1, timeouts_s={"scna": 1.0})


# -- a survey, unchanged ------------------------------------------------------------------------
def test_a_survey_over_labview_records_the_same_data_as_on_the_simulator(RE, documents, server):
    direct = simulated_stm(seed=SEED)
    remote = labview_stm(*server.address, **FAST)
    try:
        direct_uid = RE(autonomous_survey(direct, max_images=15))
        remote_uid = RE(autonomous_survey(remote, max_images=15))
    finally:
        direct.destroy()
        remote.destroy()
    runs = runs_by_uid(documents)
    (direct_docs,), (remote_docs,) = ([runs[u] for u in uid] for uid in (direct_uid, remote_uid))
    assert remote_docs[-1][1]["exit_status"] == "success"
    keys = [{k: (v["dtype"], v["shape"]) for k, v in d["data_keys"].items()}
            for docs in (direct_docs, remote_docs)
            for n, d in docs if n == "descriptor" and d["name"] == "primary"]
    assert keys[0] == keys[1]
    ours, theirs = stream(remote_docs, "primary"), stream(direct_docs, "primary")
    assert len(ours) == len(theirs) == 15
    assert [e["data"]["verdict"] for e in ours] == [e["data"]["verdict"] for e in theirs]
    assert_allclose(np.array([e["data"]["stm_image"] for e in ours]),
                    np.array([e["data"]["stm_image"] for e in theirs]), rtol=0, atol=1e-12)


# -- DeepSPM's protocol, exactly ------------------------------------------------------------------
def test_replies_labelled_as_deepspms_test_server_labels_them_parse(deepspm_server):
    backend = LabVIEWBackend(*deepspm_server.address, **FAST)
    assert backend.z_range_m() == pytest.approx(1e-6)  # sent as 'Range:1e-06'
    assert backend.scan_range_m() == pytest.approx(850e-9)
    backend.close()
    assert deepspm_server.verbs == ["getparam", "getparam"]


@pytest.mark.parametrize(("reply", "value"), [
    (b"Range:1e-06", 1e-6), (b"zRange:1e-06", 1e-6), (b"Range:1000n", 1e-6),
    (b" z piezo:1e-6 ", 1e-6), (b"1e-6", 1e-6),
])
def test_a_getparam_reply_is_read_as_the_number_after_the_colon_whatever_the_label(reply,
                                                                                   value):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        backend = LabVIEWBackend(*listener.getsockname()[:2], **FAST)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(100)
                conn.sendall(reply)
                time.sleep(0.05)

        serving = threading.Thread(target=answer)
        serving.start()
        assert_allclose(backend.z_range_m(), value, rtol=1e-12)
        serving.join()
        backend.close()


def test_by_default_withdraw_and_setparam_are_refused_before_anything_is_sent(deepspm_server):
    backend = LabVIEWBackend(*deepspm_server.address, **FAST)
    for call in (backend.withdraw, lambda: backend.set_bias(0.5),
                 lambda: backend.set_setpoint(1e-11)):
        with pytest.raises(UnsupportedRequest, match=r"DeepSPM's LabVIEW protocol does not have;"
                                                     r" nothing was sent to 127\.0\.0\.1:"):
            call()
    backend.close()
    assert deepspm_server.verbs == []


def test_the_device_says_which_extension_a_feature_needs_when_the_server_lacks_it(
        deepspm_server):
    stm = labview_stm(*deepspm_server.address, **FAST)
    try:
        with pytest.raises(UnsupportedRequest, match="setting the bias needs the 'setparam'"):
            stm.bias.put(0.5)
        assert stm.bias.get() == 1.0
        status = stm.zctrl.set("withdraw")
        with pytest.raises(UnsupportedRequest, match="extensions=\\('withdraw',\\)"):
            status.wait(timeout=5)
    finally:
        stm.destroy()
    assert set(deepspm_server.verbs) == {"getparam"}


def test_an_unknown_extension_is_refused():
    with pytest.raises(ValueError, match=r"unknown protocol extensions \['teleport'\]"):
        LabVIEWBackend("127.0.0.1", 1, extensions=("teleport",))


def test_a_survey_never_sends_a_verb_outside_deepspms_list(RE, documents, deepspm_server):
    stm = labview_stm(*deepspm_server.address, **FAST)
    try:
        RE(autonomous_survey(stm, max_images=20, mode="training"))
    finally:
        stm.destroy()
    assert [d["exit_status"] for n, d in documents if n == "stop"] == ["success"]
    assert set(deepspm_server.verbs) <= set(wire.ORIGINAL_REQUESTS)
    assert {"scan", "getparam", "tipshaping"} <= set(deepspm_server.verbs), (
        "the survey conditioned the tip, all in DeepSPM's words")


# -- timeouts from physics -----------------------------------------------------------------------
def test_the_scan_timeout_scales_with_the_frame_and_the_tip_speed(server):
    stm = labview_stm(*server.address, **FAST)
    try:
        backend = stm.backend
        deepspm_frame_s = backend.scan_timeout_s(10e-9, 64)
        stm.scanner.speed_nm_s.put(20.0)  # the device tells the backend the speed
        big_frame_s = backend.scan_timeout_s(100e-9, 512)
    finally:
        stm.destroy()
    assert scan_duration_s(100e-9, 512, 20e-9) == pytest.approx(5120.0)
    assert big_frame_s >= 2 * 5120.0 > 900.0, "no fixed 900 s limit"
    assert deepspm_frame_s == pytest.approx(2 * 16.0 + 120.0)


class LateScanServer(LabVIEWServer):
    """Answers every scan 0.3 s late."""

    def respond(self, conn: socket.socket, request: str) -> None:
        if request.startswith("scan"):
            time.sleep(0.3)
        super().respond(conn, request)


def test_a_reply_too_late_for_a_small_frame_is_waited_for_on_a_larger_one():
    with LateScanServer(SimulatedMicroscope(seed=SEED)) as late:
        backend = LabVIEWBackend(*late.address, retries=0, scan_margin_s=0.0, **FAST)
        backend.use_scan_speed(2 * 64 * 10e-9 / 0.05)  # a 10 nm frame takes 50 ms
        with pytest.raises(TimeoutError, match=r"scan\(0,0,10n ,64\)"):
            backend.scan(0, 0, 10e-9, 64)
        assert backend.scan(0, 0, 100e-9, 64).shape == (64, 64)  # 0.5 s: long enough
        backend.close()


# -- what the run is told about the instrument --------------------------------------------------
def test_the_instrument_metadata_names_backend_address_extensions_and_reported_ranges(server):
    stm = labview_stm(*server.address, outage_s=30, **OURS)
    try:
        info = stm.instrument_metadata()
    finally:
        stm.destroy()
    host, port = server.address
    assert info["backend"] == "labview" and (info["host"], info["port"]) == (host, port)
    assert info["protocol_extensions"] == ["withdraw", "setparam"]
    assert info["reported_Range_m"] == pytest.approx(850e-9)
    assert info["reported_zRange_m"] == pytest.approx(1e-6)
    assert info["outage_s"] == 30
    assert info["scan_range_nm"] == pytest.approx(850.0)


# -- the server's log ----------------------------------------------------------------------------
def test_the_server_logs_each_connection_and_each_exchange_with_its_timing(server, caplog):
    with caplog.at_level(logging.DEBUG, logger="deepspm_bluesky.servers"):
        backend = LabVIEWBackend(*server.address, **FAST)
        backend.scan(0, 0, 10e-9, 64)
        backend.close()
        time.sleep(0.1)
    text = caplog.text
    assert "connected" in text and "disconnected" in text
    assert re.search(r"scan\(0,0,10n ,64\) -> 64 x 64 image \(16392 bytes\) in \d+\.\d ms", text)
