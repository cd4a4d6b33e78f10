"""Registration of the conditioning environment with gymnasium (cheap: imports gymnasium only).

`register_envs` runs when `deepspm_bluesky.ml` is imported, and is also the plugin entry
point named in setup.cfg (group ``gymnasium.envs``) for loaders that read entry points.
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "deepspm/SpmTipConditioning-v0"


def register_envs() -> None:
    """Register `ENV_ID` (`deepspm_bluesky.ml.environment.TipConditioningEnv`); idempotent."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="deepspm_bluesky.ml.environment:TipConditioningEnv")
