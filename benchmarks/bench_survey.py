"""Survey rate into an embedded Tiled catalog, against the RunEngine with no subscriber."""

from __future__ import annotations

import tempfile
import time

from bluesky import RunEngine

from deepspm_bluesky.data import open_catalog, tiled_writer
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey

IMAGES = 200


def images_per_s(subscribe: bool) -> float:
    engine = RunEngine({}, call_returns_result=False)
    if subscribe:
        engine.subscribe(tiled_writer(open_catalog(tempfile.mkdtemp())))
    stm = simulated_stm(seed=0)
    start = time.perf_counter()
    engine(autonomous_survey(stm, max_images=IMAGES))
    return IMAGES / (time.perf_counter() - start)


def main() -> None:
    bare = images_per_s(subscribe=False)
    stored = images_per_s(subscribe=True)
    print(f"survey, {IMAGES} images: RunEngine alone {bare:.0f} images/s, "
          f"into Tiled {stored:.0f} images/s -> ratio {stored / bare:.2f} of the bare rate")
