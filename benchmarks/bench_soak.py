"""Soak: 10 000 images into an embedded catalog with crashes, lost contact, debris and a dropped
connection, over the DeepSPM LabVIEW protocol; images/s beside the RunEngine alone, memory.

Resident memory is read after the first 1 000 images (everything loaded) and at the end:
the goal is flat within 5 %.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

import numpy as np
from bluesky import RunEngine

from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.devices import labview_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.servers.labview import LabVIEWServer
from deepspm_bluesky.session import survey_session
from deepspm_bluesky.sim import SimulatedMicroscope
from deepspm_bluesky.sim.tip import random_tip

IMAGES = int(os.environ.get("DEEPSPM_SOAK_IMAGES", "10000"))
WARMUP = min(1000, IMAGES // 10)
FAULT_EVERY = 97  # scans between injected faults, cycling crash, no contact, debris


class FaultyMicroscope(SimulatedMicroscope):
    """Every `FAULT_EVERY` scans: a crash, lost contact or a 3 nm debris cluster, in turn."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.scans = 0
        self.faults: dict[str, int] = {"crash": 0, "no_contact": 0, "debris": 0}

    def scan(self, x_m, y_m, size_m, pixels):
        self.scans += 1
        fault = None
        if self.scans % FAULT_EVERY == 0:
            fault = tuple(self.faults)[(self.scans // FAULT_EVERY) % 3]
            self.faults[fault] += 1
            if fault in ("crash", "no_contact"):
                self.tip = random_tip(self.rng, "crashed" if fault == "crash" else "no_contact")
        image = super().scan(x_m, y_m, size_m, pixels)
        if fault == "debris":
            yy, xx = np.mgrid[:pixels, :pixels]
            image = image + 3e-9 * np.exp(-((xx - pixels / 3) ** 2 + (yy - pixels / 3) ** 2)
                                          / (pixels / 10) ** 2)
        return image.astype(np.float32)


class DroppingServer(LabVIEWServer):
    """Drops the connection, without a reply, at the given scan requests."""

    def __init__(self, microscope, drop_at: set[int]) -> None:
        super().__init__(microscope)
        self.drop_at, self.scan_requests, self.drops = drop_at, 0, 0

    def respond(self, conn: socket.socket, request: str) -> None:
        if request.startswith("scan"):
            self.scan_requests += 1
            if self.scan_requests in self.drop_at:
                self.drops += 1
                conn.shutdown(socket.SHUT_RDWR)
                return
        super().respond(conn, request)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def survey(engine: RunEngine, images: int, state_dir: str, server: LabVIEWServer):
    stm = labview_stm(*server.address)
    try:
        return engine(autonomous_survey(stm, max_images=images, state_dir=state_dir))
    finally:
        stm.destroy()


def main() -> None:
    scope = FaultyMicroscope(seed=11)
    server = DroppingServer(scope, drop_at={IMAGES // 3, 2 * IMAGES // 3}).start()
    folder = tempfile.mkdtemp()
    try:
        bare = RunEngine({}, call_returns_result=True)
        start = time.perf_counter()
        survey(bare, WARMUP, os.path.join(folder, "bare-state"), server)
        bare_rate = WARMUP / (time.perf_counter() - start)

        session = survey_session(open_catalog(os.path.join(folder, "catalog")), progress=False)
        state = os.path.join(folder, "state")
        survey(session.engine, WARMUP, state, server)
        memory_start = resident_mb()
        start = time.perf_counter()
        result = survey(session.engine, IMAGES - WARMUP, state, server)
        rate = (IMAGES - WARMUP) / (time.perf_counter() - start)
        memory_end = resident_mb()
        session.writer.close()
    finally:
        server.stop()
    run = open_catalog(os.path.join(folder, "catalog"))[result.run_start_uids[0]]
    stored = run["primary"]["stm_image"].shape[0]
    print(f"soak, {IMAGES} images over the LabVIEW protocol ({scope.faults} injected, "
          f"{server.drops} dropped connections): run {result.exit_status}, "
          f"{stored} of {IMAGES - WARMUP} images of the measured run in Tiled")
    print(f"  into Tiled {rate:.0f} images/s vs RunEngine alone {bare_rate:.0f} images/s "
          f"-> ratio {rate / bare_rate:.2f}")
    print(f"  resident memory {memory_start:.0f} MB after {WARMUP} images, {memory_end:.0f} MB "
          f"at the end -> {100 * (memory_end / memory_start - 1):+.1f} % (goal within 5 %)")
