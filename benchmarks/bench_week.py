"""A simulated week: the operational survey for 38 000 images (about seven days at real scan
time) with injected crashes, lost contact, debris and dropped connections, once with the
shipped agent and once with random conditioning on the same seeds.

For each: the fraction of images taken with a good tip (the simulator's truth), actions
spent, crashes, images lost between the instrument and Tiled (must be 0) and wall time (goal:
under an hour). ``DEEPSPM_WEEK_IMAGES`` shortens it.
"""

from __future__ import annotations

import os
import tempfile
import time

from benchmarks.bench_soak import FAULT_EVERY, DroppingServer, FaultyMicroscope
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.devices import labview_stm
from deepspm_bluesky.ml import ConditioningAgent, RandomAgent
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session

IMAGES = int(os.environ.get("DEEPSPM_WEEK_IMAGES", "38000"))


class TruthfulMicroscope(FaultyMicroscope):
    """Counts the scans taken with a good tip (what the simulator knows and the survey not)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.good_scans = 0

    def scan(self, *args):
        image = super().scan(*args)
        self.good_scans += bool(self.tip.is_good)
        return image


def week(agent, label: str) -> None:
    scope = TruthfulMicroscope(seed=21)
    server = DroppingServer(scope, drop_at={IMAGES // 4, IMAGES // 2, 3 * IMAGES // 4}).start()
    folder = tempfile.mkdtemp()
    session = survey_session(open_catalog(os.path.join(folder, "catalog")), progress=False)
    stm = labview_stm(*server.address)
    start = time.perf_counter()
    try:
        result = session.engine(autonomous_survey(stm, max_images=IMAGES, agent=agent,
                                                  state_dir=os.path.join(folder, "state")))
    finally:
        wall_s = time.perf_counter() - start
        session.writer.close()
        stm.destroy()
        server.stop()
    run = open_catalog(os.path.join(folder, "catalog"))[result.run_start_uids[0]]
    stored = run["primary"]["stm_image"].shape[0]
    actions = run["actions"].base["internal"].read(["action_index", "action"])
    conditioning = int((actions["action_index"] >= 0).sum())
    crashes = int((actions["action"] == "clean").sum())
    print(f"{label:22s} {result.exit_status:8s} {scope.good_scans / scope.scans:10.1%} "
          f"{conditioning:8d} {crashes:8d} {scope.scans - stored:6d} {wall_s / 60:8.1f}")


def main() -> None:
    print(f"simulated week, {IMAGES} images each: a crash, lost contact or debris every "
          f"{FAULT_EVERY} scans in turn, 3 dropped connections")
    print(f"{'conditioning':22s} {'run':8s} {'good tip':>10s} {'actions':>8s} {'crashes':>8s} "
          f"{'lost':>6s} {'minutes':>8s}")
    week(ConditioningAgent.pretrained(), "shipped agent")
    week(RandomAgent(seed=0), "random (DeepSPM's)")
