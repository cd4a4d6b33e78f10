"""IPython startup of the deepspm profile: a RunEngine writing to Tiled, an STM, the plans.

After this, ``RE(autonomous_survey())`` surveys the STM and ``catalog[-1]`` is the last run.
The catalog is $DEEPSPM_CATALOG or the per-user default; the STM is simulated unless
$DEEPSPM_BACKEND is ``labview`` or ``nanonis`` (then $DEEPSPM_HOST and $DEEPSPM_PORT).
"""

import os

import bluesky.plan_stubs as bps  # noqa: F401  (for the user at the prompt)
import bluesky.plans as bp  # noqa: F401
from bluesky import RunEngine

from deepspm_bluesky import devices, plans
from deepspm_bluesky.callbacks import SurveyProgress
from deepspm_bluesky.data import batch_size_for, open_catalog, tiled_writer

_backend = os.environ.get("DEEPSPM_BACKEND", "sim")
if _backend == "sim":
    stm = devices.simulated_stm(seed=int(os.environ.get("DEEPSPM_SEED", "0")))
else:
    _factory = {"labview": "labview_stm", "nanonis": "nanonis_stm"}[_backend]
    stm = getattr(devices, _factory)(os.environ["DEEPSPM_HOST"], int(os.environ["DEEPSPM_PORT"]))

catalog = open_catalog()
RE = RunEngine({})
RE.subscribe(tiled_writer(catalog, batch_size=batch_size_for(_backend)))
RE.subscribe(SurveyProgress())


def autonomous_survey(**options):
    """`deepspm_bluesky.plans.autonomous_survey` on this session's `stm`."""
    return plans.autonomous_survey(stm, **options)


print(f"deepspm profile: stm on {_backend} backend, catalog {catalog.uri}; "
      "try RE(autonomous_survey(max_images=20))")
