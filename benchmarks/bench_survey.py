"""Survey rate into an embedded Tiled catalog as the IPython profile wires it (journal, batched
writes, the shipped classifier; no progress bar), against the RunEngine with no subscriber.

The issue's floor is 100 images/s into Tiled; both rates are printed, and their ratio.
"""

from __future__ import annotations

import tempfile
import time

from bluesky import RunEngine

from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session

IMAGES = 1000
GOAL_IMAGES_PER_S = 100.0


def images_per_s(engine: RunEngine) -> float:
    """Rate of a second survey (the first loads everything) continuing the same state."""
    stm, state = simulated_stm(seed=0), tempfile.mkdtemp()
    engine(autonomous_survey(stm, max_images=20, state_dir=state))
    start = time.perf_counter()
    engine(autonomous_survey(stm, max_images=IMAGES, state_dir=state))
    return IMAGES / (time.perf_counter() - start)


def main() -> None:
    bare = images_per_s(RunEngine({}, call_returns_result=True))
    session = survey_session(open_catalog(tempfile.mkdtemp()), progress=False)
    stored = images_per_s(session.engine)
    session.writer.close()
    print(f"survey, {IMAGES} images, shipped classifier: RunEngine alone {bare:.0f} images/s, "
          f"into Tiled with the journal {stored:.0f} images/s -> ratio {stored / bare:.2f} of "
          f"the bare rate; {stored / GOAL_IMAGES_PER_S:.2f} of the {GOAL_IMAGES_PER_S:.0f} "
          "images/s floor")
