"""Survey rate into an embedded Tiled catalog as the IPython profile wires it (journal, batched
writes, the shipped classifier; no progress bar), against the RunEngine with no subscriber.

The issue's floor is 100 images/s into Tiled; both rates are printed, and their ratio. The two
setups take turns (`ROUNDS` surveys each, continuing the same state), so that a change of
load on the shared machine hits both; the process CPU time per image (all threads: the Tiled
writer and the in-process Tiled server too) is printed beside, being less sensitive to load.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

from bluesky import RunEngine

from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.devices import STM, simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session

IMAGES = 4000
ROUNDS = 2  # runs of IMAGES // ROUNDS images: opening and closing one takes Tiled 0.7-1.3 s
# (loaded), which a days-long survey pays once
RUN_IMAGES = IMAGES // ROUNDS
GOAL_IMAGES_PER_S = 100.0


@dataclass
class Setup:
    """One way of running the survey, and the time it has taken so far."""

    engine: RunEngine
    stm: STM
    state: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    images: int = 0

    def survey(self, images: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.engine(autonomous_survey(self.stm, max_images=images, state_dir=self.state))
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += time.process_time() - cpu
        self.images += images

    def rate(self) -> str:
        return (f"{self.images / self.wall_s:.0f} images/s "
                f"({self.cpu_s / self.images * 1e3:.1f} ms CPU an image)")


def images_per_s(engine: RunEngine, images: int = RUN_IMAGES) -> float:
    """Images/s of one simulated survey in `engine` (shipped classifier, a state directory),
    after a short one that loads everything."""
    stm, state = simulated_stm(seed=0), tempfile.mkdtemp()
    engine(autonomous_survey(stm, max_images=20, state_dir=state))
    started = time.perf_counter()
    engine(autonomous_survey(stm, max_images=images, state_dir=state))
    return images / (time.perf_counter() - started)


def main() -> None:
    session = survey_session(open_catalog(tempfile.mkdtemp()), progress=False)
    bare = Setup(RunEngine({}, call_returns_result=True), simulated_stm(seed=0),
                 tempfile.mkdtemp())
    stored = Setup(session.engine, simulated_stm(seed=0), tempfile.mkdtemp())
    for setup in (bare, stored):  # the first survey loads everything
        setup.engine(autonomous_survey(setup.stm, max_images=20, state_dir=setup.state))
    for _ in range(ROUNDS):
        for setup in (bare, stored):
            setup.survey(RUN_IMAGES)
    session.writer.close()
    ratio = (stored.images / stored.wall_s) / (bare.images / bare.wall_s)
    floor = stored.images / stored.wall_s / GOAL_IMAGES_PER_S
    print(f"survey, {stored.images} images in {ROUNDS} runs, shipped classifier: RunEngine alone "
          f"{bare.rate()}, into Tiled with the journal {stored.rate()} -> ratio {ratio:.2f} of "
          f"the bare rate; {floor:.2f} of the {GOAL_IMAGES_PER_S:.0f} images/s floor")
