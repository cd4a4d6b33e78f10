"""Live learning in a training-mode survey: its rate with the agent learning in the background
against the same survey with learning switched off (goal: at most 10 % slower), and how much
it learned (gradient updates, weight change; `LiveLearner` paces its steps to a share of the
wall time)."""

from __future__ import annotations

import time

from bluesky import RunEngine

from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.ml import AgentSettings, ConditioningAgent
from deepspm_bluesky.plans import autonomous_survey

IMAGES = 400


def images_per_s(learn: bool) -> tuple[float, float, int]:
    """Images/s of a training survey, how far the agent's weights moved, how many updates."""
    agent = ConditioningAgent(settings=AgentSettings(learning_starts=64))
    before = [p.detach().clone() for p in agent.network.parameters()]
    engine = RunEngine({}, call_returns_result=True)
    stm = simulated_stm(seed=5, tip_state="double")
    start = time.perf_counter()
    engine(autonomous_survey(stm, max_images=IMAGES, mode="training", agent=agent,
                             learn=learn))
    rate = IMAGES / (time.perf_counter() - start)
    moved = sum(float((p.detach() - b).norm()) for p, b in zip(agent.network.parameters(), before,
                                                        strict=True))
    return rate, moved, agent.updates


def main() -> None:
    still, _, _ = images_per_s(learn=False)
    learning, moved, updates = images_per_s(learn=True)
    print(f"training survey, {IMAGES} images: learning live {learning:.0f} images/s ({updates} "
          f"updates, weights moved {moved:.3f}), learning off {still:.0f} images/s -> ratio "
          f"{learning / still:.2f} (goal >= 0.90)")
