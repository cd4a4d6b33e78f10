"""The DQN conditioning agent: masked choices, Q values, checkpoints, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.ml import (
    AgentCheckpointError,
    AgentSettings,
    ConditioningAgent,
    FixedActionAgent,
    NoActionAllowed,
    Transition,
)
from deepspm_bluesky.ml.replay import ReplayBuffer
from deepspm_bluesky.sim import SimulatedMicroscope

ACTIONS = load_actions()
N = len(ACTIONS)
SMALL = AgentSettings(buffer_size=200, learning_starts=8, batch_size=8, target_sync=5,
                      epsilon_steps=20, seed=3)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Batches of one: a second thread only adds contention on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scans(seed: int, n: int, state: str = "double") -> list[np.ndarray]:
    microscope = SimulatedMicroscope(seed=seed, tip_state=state)
    return [microscope.scan(i * 20e-9, 0.0, 10e-9, 64) for i in range(n)]


@pytest.fixture(scope="module")
def images():
    return scans(1, 12)


def transitions(images, seed: int = 0) -> list[Transition]:
    """A chain of transitions over `images` (one episode, the last one good)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (a, b) in enumerate(zip(images, images[1:], strict=False)):
        done = i == len(images) - 2
        out.append(Transition(a, np.ones(N, bool), int(rng.integers(0, 13)),
                              9.0 if done else -1.0, b, np.ones(N, bool), done))
    return out


def random_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    masks = rng.random((n, N)) < rng.uniform(0.05, 0.9, (n, 1))
    masks[~masks.any(axis=1), rng.integers(N)] = True
    return masks


def test_a_masked_action_is_never_chosen_over_random_masks_and_q_values():
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 2000)
    q = rng.normal(0, 10, (2000, N))
    q[~masks] += 1e6  # masked actions look best: they must still never be taken
    for explore in (True, False):
        agent = ConditioningAgent(settings=SMALL, trunk="fresh", explore=explore)
        chosen = agent.select(q, masks)
        assert masks[np.arange(len(masks)), chosen].all()


def test_suggest_never_returns_a_masked_action_for_real_images(images):
    rng = np.random.default_rng(1)
    for explore in (True, False):
        agent = ConditioningAgent(settings=SMALL, trunk="fresh", explore=explore)
        for trial, mask in enumerate(random_masks(rng, 24)):
            assert mask[agent.suggest(images[trial % len(images)], mask)]


def test_greedy_choice_is_the_best_allowed_q_value(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh", explore=False)
    mask = np.zeros(N, bool)
    mask[[2, 5, 9]] = True
    q = agent.q_values(images[0], mask)
    assert np.all(np.isneginf(q[~mask]))
    assert agent.suggest(images[0], mask) == int(np.argmax(q))


def test_no_allowed_action_raises_no_action_allowed(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    with pytest.raises(NoActionAllowed):
        agent.suggest(images[0], np.zeros(N, bool))
    with pytest.raises(ValueError, match="mask"):
        agent.suggest(images[0], np.ones(3, bool))


def test_q_values_are_the_same_for_raw_and_normalised_images(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    raw = agent.q_values(images[0])
    normalised = agent.q_values(agent.frames(images[0])[0])
    assert raw.shape == (N,)
    np.testing.assert_allclose(raw, normalised, rtol=1e-6)


def test_epsilon_falls_linearly_to_its_floor(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    assert agent.epsilon == 1.0
    for t in transitions(images)[:10]:
        agent.observe(t)
    assert agent.epsilon == pytest.approx(1.0 + 10 / 20 * (0.05 - 1.0))
    agent.explore = False
    assert agent.epsilon == 0.0


def test_the_buffer_stores_each_frame_once(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    chain = transitions(images)
    for t in chain:
        agent.observe(t)
    assert len(agent.buffer) == len(chain)
    assert agent.buffer.frames_stored == len(images)


def test_a_full_size_buffer_fits_in_300_mb():
    buffer = ReplayBuffer(15_000, n_actions=N, feature_size=192)
    assert buffer.nbytes <= 300e6


def test_learning_starts_after_enough_transitions_and_changes_the_weights(images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    before = [p.clone() for p in agent.network.head.parameters()]
    reports = [agent.observe(t) for t in transitions(images)]
    assert "loss" not in reports[SMALL.learning_starts - 2]
    assert "loss" in reports[-1] and np.isfinite(reports[-1]["loss"])
    after = list(agent.network.head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_trunk_starts_from_the_classifier_and_stays_frozen(images):
    from deepspm_bluesky.ml import TipClassifier

    classifier = TipClassifier.pretrained()
    agent = ConditioningAgent(settings=SMALL, trunk=classifier)
    for name, value in classifier.network.trunk.state_dict().items():
        torch.testing.assert_close(agent.network.trunk.state_dict()[name], value)
    for t in transitions(images):
        agent.observe(t)
    for name, value in classifier.network.trunk.state_dict().items():
        torch.testing.assert_close(agent.network.trunk.state_dict()[name], value)


def test_a_checkpoint_round_trips_and_resumes_exactly(tmp_path, images):
    chain = transitions(images) + transitions(scans(2, 8, "blunt"), seed=1)
    agent = ConditioningAgent(settings=SMALL, trunk="fresh")
    for t in chain[:12]:
        agent.observe(t)
    path = agent.save(tmp_path / "agent.pt")
    checkpoint = torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert checkpoint["format"] == "deepspm_bluesky.ConditioningAgent"
    resumed = ConditioningAgent(settings=SMALL, trunk="fresh")
    resumed.restore(path)
    np.testing.assert_array_equal(resumed.q_values(images[0]), agent.q_values(images[0]))
    assert resumed.buffer.equals(agent.buffer)
    for t in chain[12:]:
        agent.observe(t)
        resumed.observe(t)
    np.testing.assert_array_equal(resumed.q_values(images[3]), agent.q_values(images[3]))
    assert (resumed.updates, resumed.transitions_seen) == (agent.updates, agent.transitions_seen)
    assert resumed.buffer.equals(agent.buffer)


def test_a_policy_only_checkpoint_is_small_and_suggests_the_same(tmp_path, images):
    agent = ConditioningAgent(settings=SMALL, trunk="fresh", explore=False)
    for t in transitions(images):
        agent.observe(t)
    path = agent.save(tmp_path / "policy.pt", policy_only=True)
    assert path.stat().st_size < 2e6
    loaded = ConditioningAgent.load(path)
    mask = np.ones(N, bool)
    assert [loaded.suggest(i, mask) for i in images] == [agent.suggest(i, mask) for i in images]


def test_an_agent_on_a_lines_classifier_trunk_loads_with_its_line_changes(tmp_path, images):
    from deepspm_bluesky.ml import TipClassifier
    from deepspm_bluesky.ml.networks import LineDifferences

    agent = ConditioningAgent(settings=SMALL, trunk=TipClassifier("lean-lines"), explore=False)
    for t in transitions(images):
        agent.observe(t)
    loaded = ConditioningAgent.load(agent.save(tmp_path / "policy.pt", policy_only=True))
    assert any(isinstance(m, LineDifferences) for m in loaded.network.trunk.modules())
    np.testing.assert_array_equal(loaded.q_values(images[2]), agent.q_values(images[2]))
    assert loaded.policy_copy().q_values(images[2]).tolist() == \
        agent.q_values(images[2]).tolist()


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", None])
def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "agent.pt"
    if content is None:  # a good checkpoint cut in half
        ConditioningAgent(settings=SMALL, trunk="fresh").save(path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(AgentCheckpointError, match="not a readable torch checkpoint"):
        ConditioningAgent.load(path)


def test_a_foreign_or_mismatched_checkpoint_is_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(AgentCheckpointError, match="not a conditioning-agent checkpoint"):
        ConditioningAgent.load(foreign)
    saved = ConditioningAgent(settings=SMALL, trunk="fresh").save(tmp_path / "a.pt")
    other = ConditioningAgent(settings=AgentSettings(seed=9, buffer_size=10), trunk="fresh")
    with pytest.raises(AgentCheckpointError, match="other settings"):
        other.restore(saved)
    with pytest.raises(FileNotFoundError):
        ConditioningAgent.load(tmp_path / "missing.pt")


def test_the_shipped_agent_loads_greedy_and_suggests_an_allowed_action(images):
    import time

    agent = ConditioningAgent.pretrained()
    mask = np.ones(N, bool)
    assert not agent.explore
    agent.suggest(images[0], mask)
    started = time.perf_counter()
    for image in images:
        assert mask[agent.suggest(image, mask)]
    assert (time.perf_counter() - started) / len(images) < 0.05  # loose: bench_agent times it


def test_the_fixed_action_baseline_falls_back_to_the_nearest_allowed_action():
    agent = FixedActionAgent(ACTIONS.index("dip -5.0 nm"))
    mask = ACTIONS.allowed(2.0)  # 2 nm free: dips up to 1.8 nm
    assert ACTIONS[agent.suggest(np.zeros((64, 64)), mask)].name == "dip -1.8 nm"
    assert agent.suggest(np.zeros((64, 64)), ACTIONS.allowed(10.0)) == agent.action


def test_the_fast_inference_trunk_gives_the_networks_q_values(images):
    agent = ConditioningAgent(settings=SMALL, trunk="classifier")
    frames = torch.from_numpy(agent.frames(np.stack(images[:4]))).unsqueeze(1)
    with torch.no_grad():
        reference = agent.network(frames).double().numpy()
    fast = np.stack([agent.q_values(image) for image in images[:4]])
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-4)
