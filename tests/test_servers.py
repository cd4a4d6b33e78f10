"""What both instrument protocols share: failures reported, requests never mixed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deepspm_bluesky.devices.labview import InstrumentError, LabVIEWBackend
from deepspm_bluesky.devices.nanonis import NanonisBackend
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.servers.nanonis import NanonisServer
from deepspm_bluesky.sim import SimulatedMicroscope

PROTOCOLS = {
    "labview": (LabVIEWServer, LabVIEWBackend, {"retry_delay_s": 0.01, "text_quiet_s": 0.005}),
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
