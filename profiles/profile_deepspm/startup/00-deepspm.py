"""IPython startup of the deepspm profile: a RunEngine writing to Tiled, an STM, the plans.

After this, ``RE(autonomous_survey())`` surveys the STM and ``catalog[-1]`` is the last run;
``RE(autonomous_survey(state_dir="~/survey1"))`` keeps what is needed to resume there.
The catalog is $DEEPSPM_CATALOG or the per-user default; the STM is simulated unless
$DEEPSPM_BACKEND is ``labview`` or ``nanonis`` (then $DEEPSPM_HOST and $DEEPSPM_PORT).
"""

import os

import bluesky.plan_stubs as bps  # noqa: F401  (for the user at the prompt)
import bluesky.plans as bp  # noqa: F401

from deepspm_bluesky import devices, plans
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.session import survey_session

_backend = os.environ.get("DEEPSPM_BACKEND", "sim")
if _backend == "sim":
    stm = devices.simulated_stm(seed=int(os.environ.get("DEEPSPM_SEED", "0")))
else:
    _factory = {"labview": "labview_stm", "nanonis": "nanonis_stm"}[_backend]
    stm = getattr(devices, _factory)(os.environ["DEEPSPM_HOST"], int(os.environ["DEEPSPM_PORT"]))

catalog = open_catalog()
RE = survey_session(catalog, backend=_backend).engine  # journaled Tiled writer, progress bar


def autonomous_survey(**options):
    """`deepspm_bluesky.plans.autonomous_survey` on this session's `stm`."""
    return plans.autonomous_survey(stm, **options)


print(f"deepspm profile: stm on {_backend} backend, catalog {catalog.uri}; "
      "try RE(autonomous_survey(max_images=20))")
