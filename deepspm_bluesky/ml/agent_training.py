"""Train `ConditioningAgent` on the simulated STM (vectorised environments), evaluating it
against the random and best-fixed-action baselines on fixed seeds as it goes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .agent_evaluation import (
    EpisodeStats,
    best_fixed_action,
    evaluate_policy,
    evaluation_pool,
    random_baseline,
)
from .agents import FixedActionAgent
from .conditioning_agent import ConditioningAgent
from .environment import make_vector_env

EVAL_SEED = 10_000  # evaluation episodes use seeds EVAL_SEED, EVAL_SEED + 1, ...
SCREEN_SEED = 20_000  # seeds on which the best fixed action is chosen


@dataclass(frozen=True)
class AgentTrainingSettings:
    """How long and how to train, and how to evaluate on the way.

    Attributes
    ----------
    transitions
        Environment transitions to collect (all environments together).
    envs
        Environments stepped together (one worker process each when `asynchronous`).
    asynchronous
        Worker processes for the environments (uses the cores); False steps them here.
    eval_every
        Transitions between evaluations (0: only at the end).
    eval_episodes
        Episodes per evaluation, on seeds ``EVAL_SEED + i``.
    screen_episodes
        Episodes per fixed action when choosing the best one.
    judge
        The environment's judge ("classifier" as in the survey, or "truth").
    threads
        torch threads of this process.
    seed
        Seed of the environments.
    time_limit_s
        Stop collecting after this long (None: no limit).
    fixed_action
        Name of the fixed action to compare with (None: the best on screening episodes).
    """

    transitions: int = 30_000
    envs: int = 2
    asynchronous: bool = True
    eval_every: int = 5_000
    eval_episodes: int = 50
    screen_episodes: int = 20
    judge: str = "classifier"
    threads: int = 1
    seed: int = 0
    time_limit_s: float | None = None
    fixed_action: str | None = None


@dataclass
class AgentTrainingResult:
    """What training produced: the evaluations on the way and the baselines."""

    agent: ConditioningAgent
    evaluations: list[tuple[int, EpisodeStats]] = field(default_factory=list)
    random: EpisodeStats | None = None
    fixed: EpisodeStats | None = None
    fixed_name: str = ""
    best_transitions: int = 0
    wall_s: float = 0.0

    def table(self) -> str:
        """The final comparison: agent (best evaluation), random, best fixed action."""
        rows = []
        if self.evaluations:
            best = min(self.evaluations, key=lambda e: e[1].mean_actions)
            rows.append((f"agent ({best[0]} transitions)", best[1]))
        for name, stats in ((f"best fixed: {self.fixed_name}", self.fixed),
                            ("random", self.random)):
            if stats is not None:
                rows.append((name, stats))
        return format_table(rows)


def format_table(rows: list[tuple[str, EpisodeStats]]) -> str:
    """Mean / median actions to a good tip, success within the limit, time, crashes."""
    lines = [f"{'policy':34} {'episodes':>8} {'mean':>6} {'median':>6} {'success':>8} "
             f"{'minutes':>8} {'crashes':>7}"]
    for name, stats in rows:
        s = stats.summary()
        lines.append(f"{name:34} {s['episodes']:8d} {s['mean_actions']:6.2f} "
                     f"{s['median_actions']:6.1f} {s['success']:8.1%} "
                     f"{s['mean_instrument_min']:8.1f} {s['crashes']:7d}")
    return "\n".join(lines)


def train_agent(agent: ConditioningAgent, settings: AgentTrainingSettings, *,
                output: str | Path | None = None, progress: bool = True,
                echo: Callable[[str], Any] = print) -> AgentTrainingResult:
    """Collect transitions with epsilon-greedy exploration and learn from them.

    Parameters
    ----------
    agent
        The agent to train (it keeps learning from where it is: a restored agent resumes).
    settings
        `AgentTrainingSettings`.
    output
        If given, the best policy so far (fewest mean actions in an evaluation) is saved
        here (policy only), and the full agent state beside it (``.state.pt``) to resume.
    progress
        Show a tqdm progress bar.
    echo
        Where evaluation lines go.

    Returns
    -------
    AgentTrainingResult
    """
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    env_kwargs = {"judge": settings.judge, "actions": agent.actions}
    workers = settings.envs if settings.asynchronous else 1
    eval_seeds = range(EVAL_SEED, EVAL_SEED + settings.eval_episodes)
    screen = range(SCREEN_SEED, SCREEN_SEED + settings.screen_episodes)
    result = AgentTrainingResult(agent)
    pool = evaluation_pool(workers)
    if settings.fixed_action is not None:
        fixed_index = agent.actions.index(settings.fixed_action)
    else:
        fixed_index, _ = best_fixed_action(screen, workers=workers, pool=pool,
                                           env_kwargs=env_kwargs)
    result.fixed_name = agent.actions[fixed_index].name
    result.fixed = evaluate_policy(FixedActionAgent(fixed_index), eval_seeds, workers=workers,
                                   pool=pool, name=result.fixed_name, env_kwargs=env_kwargs)
    result.random = random_baseline(eval_seeds, workers=workers, pool=pool,
                                    env_kwargs=env_kwargs)
    echo(f"baselines on {settings.eval_episodes} episodes: random "
         f"{result.random.mean_actions:.2f} actions, best fixed ({result.fixed_name}) "
         f"{result.fixed.mean_actions:.2f}")

    def evaluate() -> None:
        stats = evaluate_policy(agent.policy_copy(), eval_seeds, name="agent",
                                workers=workers, pool=pool, env_kwargs=env_kwargs)
        result.evaluations.append((agent.transitions_seen, stats))
        best = min(e[1].mean_actions for e in result.evaluations)
        if stats.mean_actions <= best:
            result.best_transitions = agent.transitions_seen
            if output is not None:
                agent.metadata.update(_metadata(settings, result, stats))
                agent.save(output, policy_only=True)
        if output is not None:
            agent.save(_state_path(output))
        echo(f"{agent.transitions_seen} transitions: agent {stats.mean_actions:.2f} actions "
             f"(random {stats.mean_actions / result.random.mean_actions:.2f}x, best fixed "
             f"{stats.mean_actions / result.fixed.mean_actions:.2f}x), success "
             f"{stats.success_rate:.0%}")

    try:
        collect_transitions(agent, settings, env_kwargs=env_kwargs, evaluate=evaluate,
                            progress=progress)
        evaluate()
    finally:
        if pool is not None:
            pool.shutdown()
    result.wall_s = time.perf_counter() - started
    return result


def _state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".state.pt")


def _metadata(settings: AgentTrainingSettings, result: AgentTrainingResult,
              stats: EpisodeStats) -> dict[str, Any]:
    return {
        "trained_on": "deepspm_bluesky.sim (TipConditioningEnv)",
        "training": {k: v for k, v in vars(settings).items()},
        "transitions": result.agent.transitions_seen,
        "evaluation": {"agent": stats.summary(), "random": result.random.summary(),
                       "best_fixed": result.fixed.summary(),
                       "best_fixed_action": result.fixed_name},
    }


def collect_transitions(agent: ConditioningAgent, settings: AgentTrainingSettings, *,
                        env_kwargs: dict[str, Any] | None = None,
                        evaluate: Callable[[], None] | None = None,
                        progress: bool = False) -> None:
    """Act epsilon-greedily in ``settings.envs`` environments, store each frame once, learn.

    Parameters
    ----------
    agent
        The learning agent.
    settings
        Transitions, environments, seed, time limit and evaluation interval.
    env_kwargs
        Passed to each `TipConditioningEnv` (default: the settings' judge).
    evaluate
        Called every ``settings.eval_every`` transitions.
    progress
        Show a tqdm progress bar.
    """
    started = time.perf_counter()
    env_kwargs = env_kwargs if env_kwargs is not None else {"judge": settings.judge}
    envs = make_vector_env(settings.envs, asynchronous=settings.asynchronous, **env_kwargs)
    n = settings.envs
    try:
        obs, info = envs.reset(seed=settings.seed)
        masks = info["action_mask"].astype(bool)
        feats = agent.features(obs)
        ids = [agent.add_frame(obs[i], feats[i]) for i in range(n)]
        lengths, recent = np.zeros(n, int), deque(maxlen=100)
        goal = agent.transitions_seen + settings.transitions
        next_eval = agent.transitions_seen + (settings.eval_every or settings.transitions + 1)
        bar = tqdm(total=settings.transitions, disable=not progress, unit="tr",
                   desc="train-agent")
        loss = float("nan")
        while agent.transitions_seen < goal:
            if settings.time_limit_s is not None and \
                    time.perf_counter() - started > settings.time_limit_s:
                break
            actions = agent.select(agent.q_from_features(feats), masks)
            obs, rewards, terminated, truncated, info = envs.step(actions)
            ended = terminated | truncated
            last, last_masks = obs.copy(), info["action_mask"].astype(bool)
            for i in np.flatnonzero(ended):
                last[i] = info["final_obs"][i]
                last_masks[i] = info["final_info"]["action_mask"][i].astype(bool)
            last_feats = agent.features(last)
            next_ids = [agent.add_frame(last[i], last_feats[i]) for i in range(n)]
            for i in range(n):
                agent.remember(ids[i], masks[i], int(actions[i]), float(rewards[i]),
                               next_ids[i], last_masks[i], bool(terminated[i]))
            report = agent.learn(updates=n * agent.settings.updates_per_transition)
            loss = report.get("loss", loss)
            lengths += 1
            feats, ids = last_feats, next_ids
            if ended.any():
                fresh = agent.features(obs)
                for i in np.flatnonzero(ended):
                    recent.append(lengths[i])
                    lengths[i] = 0
                    feats[i] = fresh[i]
                    ids[i] = agent.add_frame(obs[i], fresh[i])
            masks = info["action_mask"].astype(bool)
            bar.update(n)
            bar.set_postfix(eps=f"{agent.epsilon:.2f}", loss=f"{loss:.3f}",
                            episode=f"{np.mean(recent):.2f}" if recent else "-")
            if agent.transitions_seen >= next_eval:
                next_eval += settings.eval_every
                if evaluate is not None:
                    evaluate()
        bar.close()
    finally:
        envs.close()
