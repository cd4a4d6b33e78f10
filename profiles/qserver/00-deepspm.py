"""Queue-server startup of deepspm-bluesky: ``RE`` writing to Tiled, ``stm`` and the plans.

Loaded by ``start-re-manager --startup-dir "$(deepspm-bluesky qserver-startup)"``. The session
comes from `deepspm_bluesky.session.open_session`, set by the environment of the manager:
``DEEPSPM_CATALOG`` (folder, or served Tiled URI with ``DEEPSPM_API_KEY``) and
``DEEPSPM_BACKEND`` / ``DEEPSPM_HOST`` / ``DEEPSPM_PORT`` / ``DEEPSPM_SEED``. Classifier and agent
travel as names (``"pretrained"``, ``"random"``, a checkpoint path). After changing the plans,
regenerate ``existing_plans_and_devices.yaml`` beside this file:
``qserver-list-plans-devices --startup-dir profiles/qserver --file-dir profiles/qserver``.
"""

import os

from deepspm_bluesky.data import ENV_VAR
from deepspm_bluesky.profiles.qserver_plans import count, queued_survey  # noqa: F401 (a plan)
from deepspm_bluesky.session import API_KEY_VAR, InstrumentSettings, open_session

_session = open_session(InstrumentSettings.from_environment(), os.environ.get(ENV_VAR) or None,
                        api_key=os.environ.get(API_KEY_VAR) or None, progress=False)
RE, catalog, stm = _session.engine, _session.catalog, _session.stm
autonomous_survey = queued_survey()
