"""The survey's side of the conditioning agent: who chooses, what is learned, what is kept.

No Bluesky here: `ConditioningChoices` asks the agent (or, in the training episodes that
compare it with chance, a random policy), turns each outcome into a `Transition` with the
time-counting reward of `deepspm_bluesky.ml.reward`, and keeps the agent's state on disk.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deepspm_bluesky.judging import Judgement
from deepspm_bluesky.ml import Agent, RandomAgent, Transition
from deepspm_bluesky.ml.reward import STEP_TIME_S, TIP_CLEAN_S, conditioning_reward

SAVE_AGENT_EVERY_S = 600.0  # an agent with a replay buffer is not saved every image
APPROACH_S = 120.0  # instrument time of a re-approach with creep settling (ml.reward's note)
RECOVERY_S = {"crash": TIP_CLEAN_S, "no_contact": APPROACH_S}


class ConditioningChoices:
    """Suggestions of the agent or of chance, and the transitions the agent learns from.

    Parameters
    ----------
    agent
        The conditioning agent (``suggest``/``observe``; ``q_values`` when it has them).
    seed
        Seed of the random policy of comparison episodes.
    """

    def __init__(self, agent: Agent, *, seed: int = 0) -> None:
        self.agent = agent
        self.random = RandomAgent(seed)
        self.pending: tuple[np.ndarray, np.ndarray, int] | None = None
        self._saved_at = time.monotonic()

    def choose(self, image: np.ndarray, allowed: np.ndarray,
               chooser: str) -> tuple[int, np.ndarray]:
        """(action index, Q-values or NaNs) from the agent, or from chance when asked."""
        q_values = np.full(len(allowed), np.nan)
        if chooser == "random":
            return int(self.random.suggest(image, allowed)), q_values
        index = int(self.agent.suggest(image, allowed))
        agent = getattr(self.agent, "agent", self.agent)  # a LiveLearner wraps the agent
        q_of = getattr(agent, "q_values", None)
        if callable(q_of):
            q_values = np.asarray(q_of(image), dtype=float)
        return index, q_values

    def acted(self, image: np.ndarray, allowed: np.ndarray, index: int) -> None:
        """An action ran on `image`: the next judged image completes the transition."""
        self.pending = (image, allowed, index)

    def learn(self, image: np.ndarray, judgement: Judgement) -> dict[str, float]:
        """Hand the agent the transition the last action led to; what it learned, or {}."""
        if self.pending is None or judgement.allowed is None:
            return {}
        before, allowed, index = self.pending
        self.pending = None
        elapsed_s = STEP_TIME_S + RECOVERY_S.get(judgement.check, 0.0)
        good = judgement.tip_good
        return self.agent.observe(Transition(
            before, allowed, index, conditioning_reward(elapsed_s, good=good), image,
            judgement.allowed, good))

    def save(self, path: Path, *, force: bool = False) -> None:
        """The agent's and the random policy's state, at most every `SAVE_AGENT_EVERY_S`."""
        if not force and time.monotonic() - self._saved_at < SAVE_AGENT_EVERY_S:
            return
        save = getattr(self.agent, "save", None)
        if callable(save):
            save(path)
        self.random.save(path.with_name(path.name + ".random"))
        self._saved_at = time.monotonic()

    def restore(self, path: Path) -> None:
        """Continue from the states `save` left at `path`, where there are any."""
        restore = getattr(self.agent, "restore", None)
        if callable(restore) and path.exists():
            restore(path)
        random_path = path.with_name(path.name + ".random")
        if random_path.exists():
            self.random.restore(random_path)

    def close(self) -> None:
        """Stop a background learner (after it learned what is queued)."""
        close = getattr(self.agent, "close", None)
        if callable(close):
            close()
