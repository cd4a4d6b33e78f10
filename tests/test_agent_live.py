"""LiveLearner: learning from the survey's transitions in a background thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.ml import AgentSettings, ConditioningAgent, Transition
from deepspm_bluesky.ml.live import LiveLearner
from deepspm_bluesky.sim import SimulatedMicroscope

N = len(load_actions())
IMAGE = np.zeros((64, 64))


def transition(image=IMAGE, next_image=IMAGE, done=False) -> Transition:
    return Transition(image, np.ones(N, bool), 1, -1.0, next_image, np.ones(N, bool), done)


class GatedAgent:
    """Learns only when the test opens the gate; records what it saw."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[Transition] = []

    def suggest(self, image, allowed) -> int:
        return int(np.flatnonzero(allowed)[-1])

    def observe(self, t: Transition) -> dict[str, float]:
        self.gate.wait(timeout=10)
        if t.reward == 666:
            raise RuntimeError("bad transition")
        self.seen.append(t)
        return {"loss": 0.5, "updates": float(len(self.seen))}


def test_observe_returns_at_once_while_learning_is_busy():
    agent = GatedAgent()
    with LiveLearner(agent) as learner:
        replies = [learner.observe(transition()) for _ in range(3)]
        assert [r["queued"] for r in replies] == [1.0, 1.0, 1.0]
        assert agent.seen == []  # the gate is shut: nothing learned yet, nothing blocked
        agent.gate.set()
        assert learner.flush(timeout=10)
        assert len(agent.seen) == 3 and learner.report()["transitions"] == 3


def test_learning_can_be_switched_off():
    agent = GatedAgent()
    agent.gate.set()
    with LiveLearner(agent, learn=False) as learner:
        assert learner.observe(transition())["queued"] == 0.0
        learner.flush(timeout=10)
        learner.learning = True
        learner.observe(transition())
        learner.flush(timeout=10)
    assert len(agent.seen) == 1


def test_a_full_queue_drops_transitions_instead_of_blocking():
    agent = GatedAgent()
    learner = LiveLearner(agent, max_queued=1)
    replies = [learner.observe(transition()) for _ in range(4)]
    assert sum(r["queued"] for r in replies) <= 2  # one in the queue, one being learned
    assert learner.dropped >= 2
    agent.gate.set()
    learner.close()


def test_close_stops_the_thread_after_learning_what_was_queued():
    agent = GatedAgent()
    agent.gate.set()
    learner = LiveLearner(agent)
    learner.observe(transition())
    learner.close()
    assert not learner._thread.is_alive()
    assert len(agent.seen) == 1
    with pytest.raises(RuntimeError, match="closed"):
        learner.observe(transition())
    learner.close()  # idempotent


def test_a_failing_learning_step_is_counted_and_learning_goes_on():
    agent = GatedAgent()
    agent.gate.set()
    with LiveLearner(agent) as learner:
        bad = Transition(IMAGE, np.ones(N, bool), 1, 666, IMAGE, np.ones(N, bool), False)
        learner.observe(bad)
        learner.observe(transition())
        learner.flush(timeout=10)
        assert learner.report()["errors"] == 1
        assert isinstance(learner.error, RuntimeError)
    assert len(agent.seen) == 1


def test_suggest_asks_the_wrapped_agent():
    with LiveLearner(GatedAgent()) as learner:
        assert learner.suggest(IMAGE, np.array([True, True, False])) == 1


def test_a_live_dqn_changes_its_weights_and_reports_it(tmp_path):
    microscope = SimulatedMicroscope(seed=4, tip_state="unstable")
    images = [microscope.scan(i * 20e-9, 0.0, 10e-9, 64) for i in range(10)]
    settings = AgentSettings(buffer_size=100, learning_starts=4, batch_size=4, seed=1)
    agent = ConditioningAgent(settings=settings, trunk="fresh")
    with LiveLearner(agent) as learner:
        for a, b in zip(images, images[1:], strict=False):
            learner.observe(transition(a, b))
        learner.save(tmp_path / "live.pt")
        report = learner.report()
    assert report["transitions"] == 9
    assert report["updates"] > 0 and np.isfinite(report["mean_loss"])
    assert report["weight_change"] > 0
    restored = ConditioningAgent.load(tmp_path / "live.pt")
    assert restored.transitions_seen == 9
