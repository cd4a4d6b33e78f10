"""The DeepSPM LabVIEW protocol over real TCP on 127.0.0.1: wire format, server, client, survey."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.devices import labview_stm, simulated_stm
from deepspm_bluesky.devices.labview import InstrumentError, LabVIEWBackend
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers import labview_wire as wire
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.sim import SimulatedMicroscope

SEED = 7
FAST = {"retry_delay_s": 0.01, "text_quiet_s": 0.005}


@pytest.fixture
def server():
    with LabVIEWServer(SimulatedMicroscope(seed=SEED)) as running:
        yield running


@pytest.fixture
def backend(server):
    client = LabVIEWBackend(*server.address, **FAST)
    yield client
    client.close()


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
