"""`LiveLearner`: an agent that learns from the survey's transitions in a background thread.

DeepSPM's agent learned in its own thread beside data collection. The survey hands each
transition to `LiveLearner.observe`, which only queues it and returns at once; a worker
thread stores it and runs the gradient updates. A lock serialises learning and `suggest`,
so a suggestion waits at most for one learning step (a millisecond with a frozen trunk).
Learning is paced: transitions observed with their gradient step take at most `max_share`
of the wall time, and one that arrives beyond that is only stored (a simulated survey makes
a transition every few milliseconds, a step costs ~13 ms and competes with the plan for the
2 cores and the GIL; a real one leaves time for a step per transition).
No Bluesky import: the plan adapts this like any `Agent`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .agents import Agent, Transition

STOP = object()
MAX_SHARE = 0.05  # of the wall time, at most, spent on learning steps (bench_live_learning)
FREE_START_S = 0.25  # ... beyond a first quarter second, so that a short survey learns too


class LiveLearner:
    """Wrap an agent so that `observe` never blocks: learning runs in a background thread.

    Parameters
    ----------
    agent
        The agent to wrap (`ConditioningAgent` or any `Agent`).
    learn
        False switches learning off: `observe` drops the transitions and `suggest` still
        asks the agent (settable later as `learning`).
    max_queued
        Transitions waiting at most; further ones are dropped (and counted) rather than
        slowing the survey down.
    max_share
        Share of the wall time that transitions observed with their gradient step may
        take (beyond a first `FREE_START_S`); a transition arriving while they are over
        it is stored without a step (counted as ``paced``).
        Only for agents that can store without learning (``settings.updates_per_transition``,
        as `ConditioningAgent`); others learn from every transition. None: no pacing.

    Examples
    --------
    >>> from deepspm_bluesky.ml import RandomAgent
    >>> with LiveLearner(RandomAgent()) as learner:
    ...     learner.suggest(np.zeros((64, 64)), np.array([False, True]))
    1
    """

    def __init__(self, agent: Agent, *, learn: bool = True, max_queued: int = 1000,
                 max_share: float | None = MAX_SHARE) -> None:
        if max_share is not None and not 0 < max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1] or None, got {max_share!r}")
        self.agent = agent
        self.learning = learn
        self.max_share = max_share
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._closed = False
        self._error: BaseException | None = None
        self.learned = 0
        self.dropped = 0
        self.errors = 0
        self.paced = 0
        self.last: dict[str, float] = {}
        self._losses: list[float] = []
        self._learn_s = 0.0
        self._step_s = 0.0  # time of the transitions observed with their step
        self._started = time.perf_counter()
        self._start = _parameters(agent)
        self._thread = threading.Thread(target=self._run, name="deepspm-live-learner",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> LiveLearner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Agent protocol ------------------------------------------------------------------
    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        """The wrapped agent's suggestion (waits for a learning step in progress)."""
        with self._lock:
            return self.agent.suggest(image, allowed)

    def observe(self, transition: Transition) -> dict[str, float]:
        """Queue `transition` for learning and return at once.

        Returns
        -------
        dict
            ``queued`` (1 if queued, 0 if learning is off or the queue was full) and the
            counts so far; what the learning found is in `report`.
        """
        if self._closed:
            raise RuntimeError("this LiveLearner is closed")
        queued = 0.0
        if self.learning:
            try:
                self._queue.put_nowait(transition)
                queued = 1.0
            except queue.Full:
                self.dropped += 1
        return {"queued": queued, "learned": float(self.learned),
                "dropped": float(self.dropped)}

    # -- control -----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued transition has been learned; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Take in what is queued (learning within the share), then stop the thread
        (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(STOP)
        self._thread.join(timeout)

    def save(self, path: str | Path) -> None:
        """Save the wrapped agent after learning what is queued (same file as its `save`)."""
        self.flush()
        with self._lock:
            self.agent.save(path)

    def restore(self, path: str | Path) -> None:
        """Restore the wrapped agent from `path`."""
        self.flush()
        with self._lock:
            self.agent.restore(path)

    def report(self) -> dict[str, float]:
        """What was learned: transitions, dropped, paced (stored without a step), updates,
        mean loss, time spent, weight change.

        ``weight_change`` is the L2 norm of the change of the agent's parameters since this
        learner started (0 for an agent without torch parameters).
        """
        with self._lock:
            change = _distance(self._start, _parameters(self.agent))
            losses = self._losses
            return {
                "transitions": float(self.learned), "dropped": float(self.dropped),
                "paced": float(self.paced), "errors": float(self.errors),
                "queued": float(self._queue.qsize()),
                "updates": float(self.last.get("updates", 0.0)),
                "mean_loss": float(np.mean(losses)) if losses else float("nan"),
                "learn_s": self._learn_s, "weight_change": change,
            }

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is STOP:
                    return
                started = time.perf_counter()
                step = self._within_share(started)
                with self._lock:
                    metrics = self._observe(item, step=step)
                took = time.perf_counter() - started
                self._learn_s += took
                self._step_s += took if step else 0.0
                self.learned += 1
                self.last = dict(metrics)
                if "loss" in metrics:
                    self._losses.append(float(metrics["loss"]))
            except Exception as error:  # keep the survey alive; counted in `report`
                self._error = error
                self.errors += 1
            finally:
                self._queue.task_done()

    def _within_share(self, now: float) -> bool:
        return self.max_share is None \
            or self._step_s <= self.max_share * (now - self._started) + FREE_START_S

    def _observe(self, transition: Transition, *, step: bool) -> dict[str, float]:
        """The agent's `observe`; without its gradient step when `step` is False and the
        agent can store alone (its ``updates_per_transition`` set to 0 for this call)."""
        settings = getattr(self.agent, "settings", None)
        if step or not hasattr(settings, "updates_per_transition"):
            return self.agent.observe(transition)
        self.agent.settings = replace(settings, updates_per_transition=0)
        try:
            metrics = self.agent.observe(transition)
        finally:
            self.agent.settings = settings
        self.paced += 1
        return metrics

    @property
    def error(self) -> BaseException | None:
        """The last exception a learning step raised, if any (the thread keeps going)."""
        return self._error


def _parameters(agent: Any) -> list[torch.Tensor]:
    network = getattr(agent, "network", None)
    if not isinstance(network, torch.nn.Module):
        return []
    return [p.detach().clone() for p in network.parameters()]


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if not a or len(a) != len(b):
        return 0.0
    return float(torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b, strict=True))))
