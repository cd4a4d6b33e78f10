"""Evaluate conditioning policies on fixed seeds of the environment, and the baselines.

A policy is anything with ``suggest(image, allowed) -> index`` (the `Agent` protocol). An
episode with seed ``s`` starts from the same microscope and tip for every policy, so the
policies are compared on the same tips. DeepSPM compared its agent with a random policy by
mean episode length; here the best single fixed action is a second baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np

from .agents import Agent, FixedActionAgent, RandomAgent
from .environment import TipConditioningEnv


@dataclass
class EpisodeStats:
    """Per-episode results of one policy.

    Attributes
    ----------
    name
        What the policy is.
    actions
        Actions taken per episode (an episode that never reached a good tip counts its
        `max_actions`, so the mean is a lower bound for a policy that fails).
    success
        Whether the tip was judged good within the episode's actions.
    returns
        Sum of the rewards.
    instrument_s
        Instrument time the episode took.
    crashes
        Crashes (and heavy tip cleans) during the episode.
    """

    name: str
    actions: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    success: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    instrument_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    crashes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def episodes(self) -> int:
        return len(self.actions)

    @property
    def mean_actions(self) -> float:
        """Mean actions to a good tip (failures count their `max_actions`)."""
        return float(np.mean(self.actions))

    @property
    def success_rate(self) -> float:
        """Fraction of episodes that reached a good tip."""
        return float(np.mean(self.success))

    @classmethod
    def merged(cls, name: str, parts: Sequence[EpisodeStats]) -> EpisodeStats:
        """One record from several (in order)."""
        def cat(attr: str) -> np.ndarray:
            return np.concatenate([getattr(p, attr) for p in parts])

        return cls(name, cat("actions"), cat("success"), cat("returns"),
                   cat("instrument_s"), cat("crashes"))

    def summary(self) -> dict[str, float]:
        """Plain numbers for a table or a log."""
        return {"episodes": self.episodes, "mean_actions": self.mean_actions,
                "median_actions": float(np.median(self.actions)),
                "success": self.success_rate, "mean_return": float(np.mean(self.returns)),
                "mean_instrument_min": float(np.mean(self.instrument_s)) / 60,
                "crashes": int(np.sum(self.crashes))}


def run_episodes(policy: Agent, seeds: Sequence[int], *, name: str = "policy",
                 env: TipConditioningEnv | None = None,
                 env_kwargs: dict[str, Any] | None = None) -> EpisodeStats:
    """Run one episode per seed with `policy`; return the per-episode results."""
    env = env if env is not None else TipConditioningEnv(**(env_kwargs or {}))
    rows = []
    for seed in seeds:
        if hasattr(policy, "start_episode"):
            policy.start_episode(int(seed))
        image, info = env.reset(seed=int(seed))
        steps, total, elapsed, crashes = 0, 0.0, 0.0, 0
        while True:
            action = policy.suggest(image, info["action_mask"].astype(bool))
            image, reward, terminated, truncated, info = env.step(action)
            steps, total = steps + 1, total + reward
            elapsed, crashes = elapsed + info["elapsed_s"], crashes + info["crashes"]
            if terminated or truncated:
                break
        rows.append((steps, terminated, total, elapsed, crashes))
    actions, success, returns, instrument, crash = (np.array(c) for c in zip(*rows, strict=True))
    return EpisodeStats(name, actions.astype(int), success.astype(bool), returns.astype(float),
                        instrument.astype(float), crash.astype(int))


def _worker(policy: Agent, seeds: list[int], name: str,
            env_kwargs: dict[str, Any]) -> EpisodeStats:
    import torch

    torch.set_num_threads(1)
    return run_episodes(policy, seeds, name=name, env_kwargs=env_kwargs)


def evaluation_pool(workers: int) -> Executor | None:
    """Worker processes for `evaluate_policy` (spawned; None for ``workers <= 1``).

    Starting a worker imports torch (seconds), so keep one pool for many evaluations.
    """
    if workers <= 1:
        return None
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))


def evaluate_policy(policy: Agent, seeds: Sequence[int], *, name: str = "policy",
                    workers: int = 1, pool: Executor | None = None,
                    env_kwargs: dict[str, Any] | None = None) -> EpisodeStats:
    """`run_episodes`, split over `workers` processes (each on one torch thread).

    The result does not depend on `workers` for policies whose choices in an episode do
    not depend on earlier episodes (a greedy agent, a fixed action, `EpisodeSeededRandom`).
    Pass a `pool` from `evaluation_pool` to reuse its processes.
    """
    seeds = [int(s) for s in seeds]
    env_kwargs = dict(env_kwargs or {})
    if workers <= 1 or len(seeds) < 2:
        return run_episodes(policy, seeds, name=name, env_kwargs=env_kwargs)
    chunks = [[int(s) for s in c] for c in np.array_split(seeds, workers) if len(c)]
    own = pool is None
    pool = evaluation_pool(workers) if own else pool
    try:
        parts = list(pool.map(_worker, [policy] * len(chunks), chunks,
                              [name] * len(chunks), [env_kwargs] * len(chunks)))
    finally:
        if own:
            pool.shutdown()
    return EpisodeStats.merged(name, parts)


class EpisodeSeededRandom(RandomAgent):
    """`RandomAgent` restarted from ``(seed, episode seed)`` at every episode, so that its
    choices in an episode do not depend on which episodes came before (or on workers)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.seed = seed

    def start_episode(self, episode_seed: int) -> None:
        self.rng = np.random.default_rng([self.seed, episode_seed])


def random_baseline(seeds: Sequence[int], *, seed: int = 0, workers: int = 1,
                    pool: Executor | None = None,
                    env_kwargs: dict[str, Any] | None = None) -> EpisodeStats:
    """A uniformly random allowed action at every step (DeepSPM's baseline)."""
    return evaluate_policy(EpisodeSeededRandom(seed), seeds, name="random", workers=workers,
                           pool=pool, env_kwargs=env_kwargs)


def best_fixed_action(screen_seeds: Sequence[int], *, workers: int = 1,
                      pool: Executor | None = None,
                      env_kwargs: dict[str, Any] | None = None) -> tuple[int, dict[int, float]]:
    """The single action (never a stall) with the fewest mean actions on `screen_seeds`.

    Returns
    -------
    (int, dict)
        Its index, and the mean actions of every action tried.
    """
    env = TipConditioningEnv(**(env_kwargs or {}))
    candidates = [i for i, a in enumerate(env.actions) if a.kind != "stall"]
    means = {i: evaluate_policy(FixedActionAgent(i), screen_seeds, workers=workers, pool=pool,
                                env_kwargs=env_kwargs).mean_actions for i in candidates}
    return min(means, key=means.get), means
