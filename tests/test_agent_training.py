"""Training the conditioning agent on the simulator, and the evaluation against baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepspm_bluesky.ml import AgentSettings, ConditioningAgent, FixedActionAgent
from deepspm_bluesky.ml.agent_evaluation import (
    EpisodeSeededRandom,
    evaluate_policy,
    random_baseline,
    run_episodes,
)
from deepspm_bluesky.ml.agent_training import (
    AgentTrainingResult,
    AgentTrainingSettings,
    collect_transitions,
)

# A small problem: two bad states that need different remedies, judged by the truth.
SMALL_PROBLEM = {"judge": "truth", "start_states": ("contaminated", "double"),
                 "max_actions": 10, "extra_defect": 0.0}
SEEDS = range(500, 520)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_short_training_run_improves_over_its_start():
    settings = AgentSettings(buffer_size=1000, learning_starts=60, batch_size=32,
                             epsilon_steps=200, target_sync=50, updates_per_transition=2,
                             seed=0)
    agent = ConditioningAgent(settings=settings, trunk="classifier")
    before = run_episodes(agent.policy_copy(), SEEDS, env_kwargs=SMALL_PROBLEM)
    collect_transitions(agent, AgentTrainingSettings(transitions=300, envs=1,
                                                     asynchronous=False, eval_every=0),
                        env_kwargs=SMALL_PROBLEM)
    after = run_episodes(agent.policy_copy(), SEEDS, env_kwargs=SMALL_PROBLEM)
    assert agent.transitions_seen == 300 and agent.updates > 0
    assert after.mean_actions < 0.7 * before.mean_actions, (before.summary(), after.summary())
    assert after.success_rate >= before.success_rate


def test_episodes_on_the_same_seeds_start_from_the_same_tips():
    stats = [run_episodes(FixedActionAgent(1), range(3), env_kwargs=SMALL_PROBLEM)
             for _ in range(2)]
    np.testing.assert_array_equal(stats[0].actions, stats[1].actions)
    np.testing.assert_array_equal(stats[0].returns, stats[1].returns)


def test_the_random_baseline_does_not_depend_on_the_order_of_episodes():
    forward = random_baseline([7, 8], env_kwargs=SMALL_PROBLEM)
    backward = evaluate_policy(EpisodeSeededRandom(0), [8, 7], env_kwargs=SMALL_PROBLEM)
    np.testing.assert_array_equal(forward.actions, backward.actions[::-1])


def test_the_final_table_names_every_policy_and_its_numbers():
    stats = run_episodes(FixedActionAgent(1), range(2), name="x", env_kwargs=SMALL_PROBLEM)
    result = AgentTrainingResult(agent=None, evaluations=[(100, stats)], random=stats,
                                 fixed=stats, fixed_name="pulse +2.5 V")
    table = result.table()
    for name in ("agent (100 transitions)", "best fixed: pulse +2.5 V", "random"):
        assert name in table
    assert f"{stats.mean_actions:.2f}" in table


def test_the_train_agent_command_writes_a_policy_and_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from deepspm_bluesky.cli import app

    output = tmp_path / "agent.pt"
    result = CliRunner().invoke(app, [
        "train-agent", "--output", str(output), "--transitions", "40", "--envs", "1",
        "--eval-every", "0", "--eval-episodes", "2", "--screen-episodes", "1",
        "--learning-starts", "10", "--judge", "truth", "--no-progress",
        "--fixed-action", "dip -1.0 nm"])
    assert result.exit_code == 0, result.output
    assert "best fixed: dip -1.0 nm" in result.output and "random" in result.output
    agent = ConditioningAgent.load(output)
    assert agent.metadata["evaluation"]["agent"]["episodes"] == 2
    resumed = ConditioningAgent.load(tmp_path / "agent.state.pt")
    assert resumed.transitions_seen == 40 and len(resumed.buffer) == 40
