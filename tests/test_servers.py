"""What both instrument protocols share: failures reported, requests never mixed, exchanges
logged, a command that serves each, outages waited out."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from services import free_port

from deepspm_bluesky.devices import InstrumentError, InstrumentUnreachable, labview_stm, nanonis_stm
from deepspm_bluesky.devices.labview import LabVIEWBackend
from deepspm_bluesky.devices.nanonis import NanonisBackend
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.servers.nanonis import NanonisServer
from deepspm_bluesky.sim import SimulatedMicroscope

PROTOCOLS = {
    "labview": (LabVIEWServer, LabVIEWBackend, {"retry_delay_s": 0.01, "text_quiet_s": 0.005,
                                                "extensions": ("withdraw", "setparam")}),
    "nanonis": (NanonisServer, NanonisBackend,
                {"retry_delay_s": 0.01, "slack_s": 0.0, "approach_poll_s": 0.01}),
}


class BrokenCleaner(SimulatedMicroscope):
    def tip_clean(self, x_m: float, y_m: float) -> bool:
        raise RuntimeError("cleaning pad missing")


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_a_failing_simulator_is_reported_and_the_server_keeps_serving(protocol):
    server_class, backend_class, fast = PROTOCOLS[protocol]
    with server_class(BrokenCleaner(seed=7)) as broken:
        backend = backend_class(*broken.address, **fast)
        with pytest.raises(InstrumentError, match="RuntimeError: cleaning pad missing"):
            backend.tip_clean(0, 0)
        assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)
        backend.close()


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_requests_from_two_threads_never_mix_on_the_wire(protocol):
    server_class, backend_class, fast = PROTOCOLS[protocol]
    errors = []
    with server_class(SimulatedMicroscope(seed=7)) as server:
        backend = backend_class(*server.address, **fast)

        def set_bias_repeatedly() -> None:
            try:
                for i in range(40):
                    backend.set_bias(1.0 + i / 100)
            except Exception as exc:  # reported below, on the test's thread
                errors.append(exc)

        other = threading.Thread(target=set_bias_repeatedly)
        other.start()
        images = [backend.scan(i * 10e-9, 0, 10e-9, 64) for i in range(20)]
        other.join()
        backend.close()
    assert errors == []
    assert all(image.shape == (64, 64) and np.isfinite(image).all() for image in images)
    assert server.microscope.bias_v == pytest.approx(1.39, rel=1e-6)


# -- outages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_a_scan_waits_for_a_server_that_goes_away_and_comes_back_on_the_same_port(protocol):
    server_class, backend_class, fast = PROTOCOLS[protocol]
    port = free_port()
    first = server_class(SimulatedMicroscope(seed=7), port=port).start()
    backend = backend_class("127.0.0.1", port, **{**fast, "outage_s": 10.0})
    assert backend.scan(0, 0, 10e-9, 64).shape == (64, 64)
    first.stop()
    returned = []
    threading.Timer(1.0, lambda: returned.append(
        server_class(SimulatedMicroscope(seed=7), port=port).start())).start()
    started = time.time()
    try:
        image = backend.scan(0, 0, 10e-9, 64)
        waited_s = time.time() - started
        (outage,) = backend.take_outages()
    finally:
        backend.close()
        for server in returned:
            server.stop()
    assert image.shape == (64, 64) and 0.9 <= waited_s < 5.0
    assert started <= outage.start < outage.end <= started + waited_s + 0.01
    assert outage.duration_s >= 0.9
    assert "scan" in outage.cause
    assert backend.take_outages() == [], "an outage is handed over once"


@pytest.mark.parametrize("factory", [labview_stm, nanonis_stm])
def test_an_stm_that_loses_its_server_for_longer_than_the_limit_says_where_and_how_long(
        factory):
    protocol = "labview" if factory is labview_stm else "nanonis"
    server_class, _, fast = PROTOCOLS[protocol]
    server = server_class(SimulatedMicroscope(seed=7)).start()
    host, port = server.address
    stm = factory(host, port, **{**fast, "outage_s": 0.3})
    server.stop()
    try:
        with pytest.raises(InstrumentUnreachable, match=rf"the instrument at 127\.0\.0\.1:"
                           rf"{port} was unreachable for 0\.[3-9] s"):
            stm.trigger().wait(timeout=10)
        (outage,) = stm.take_outages()
    finally:
        stm.destroy()
    assert "gave up after 0." in outage.cause


def test_the_simulated_stm_has_no_outages_and_says_it_is_the_simulator(stm):
    stm.trigger().wait(timeout=10)
    assert stm.take_outages() == []
    assert stm.instrument_metadata()["backend"] == "sim"
    assert stm.instrument_metadata()["seed"] == 7


def test_the_nanonis_metadata_names_address_z_channel_and_reported_ranges():
    with NanonisServer(SimulatedMicroscope(seed=7)) as server:
        address = server.address
        stm = nanonis_stm(*address, **PROTOCOLS["nanonis"][2])
        try:
            info = stm.instrument_metadata()
        finally:
            stm.destroy()
    assert (info["backend"], info["host"], info["port"]) == ("nanonis", *address)
    assert info["z_channel"] == 14 and info["outage_s"] == 600
    assert info["reported_piezo_range_m"] == [850e-9, 850e-9, 1e-6]


# -- logs and commands -------------------------------------------------------------------------
CLI = str(Path(sys.executable).parent / "deepspm-bluesky")


def test_the_nanonis_server_logs_each_command_and_response_with_its_timing(caplog):
    with NanonisServer(SimulatedMicroscope(seed=7)) as server, \
            caplog.at_level(logging.DEBUG, logger="deepspm_bluesky.servers"):
        backend = NanonisBackend(*server.address, **PROTOCOLS["nanonis"][2])
        backend.scan(0, 0, 10e-9, 64)
        backend.close()
        time.sleep(0.1)
    assert "connected" in caplog.text and "disconnected" in caplog.text
    assert re.search(r"Scan\.FrameDataGrab \(8 bytes\) -> \d+ bytes in \d+\.\d ms", caplog.text)


@pytest.mark.parametrize("command", ["labview-server", "nanonis-server"])
def test_the_server_commands_serve_the_simulator_and_log_exchanges_when_verbose(command,
                                                                                tmp_path):
    port = free_port()
    log_file = tmp_path / "server.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(
            [CLI, command, "--port", str(port),
             "--seed", "3", "--verbose"], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        factory = labview_stm if command == "labview-server" else nanonis_stm
        stm = wait_for(lambda: factory("127.0.0.1", port, outage_s=0, connect_timeout_s=1))
        stm.trigger().wait(timeout=30)
        stm.destroy()
        assert stm.image.get().shape == (64, 64)
        time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(timeout=10)
    text = log_file.read_text()
    assert "client ('127.0.0.1'" in text and "connected" in text
    assert re.search(r"(scan\(0,0,10n ,64\)|Scan\.FrameDataGrab).* in \d+\.\d ms", text)


def wait_for(make, timeout_s: float = 60.0):
    """`make()` once it stops failing to connect (a server command starting up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return make()
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
