"""The gymnasium environment over the simulated STM: API, masks, rewards, vector version."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.ml import ENV_ID
from deepspm_bluesky.ml.environment import TipConditioningEnv, make_vector_env
from deepspm_bluesky.ml.reward import (
    SCAN_TIME_S,
    STEP_TIME_S,
    SUCCESS_REWARD,
    conditioning_reward,
)


@pytest.fixture
def env():
    return TipConditioningEnv(judge="truth")


def test_the_environment_passes_gymnasiums_checker():
    check_env(TipConditioningEnv(judge="truth"), skip_render_check=True)


def test_importing_the_ml_package_registers_an_spm_environment():
    assert "spm" in ENV_ID.lower()
    env = gym.make(ENV_ID, judge="truth")
    image, info = env.reset(seed=0)
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert env.action_space.n == len(info["action_mask"])


def test_an_episode_starts_on_a_tip_the_judge_calls_bad(env):
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert info["tip_state"] != "good"
        assert info["p_good"] < 0.9


def test_the_same_seed_gives_the_same_episode(env):
    def episode(seed):
        image, _ = env.reset(seed=seed)
        images = [image]
        for action in (1, 7, 2):
            images.append(env.step(action)[0])
        return np.stack(images)

    np.testing.assert_array_equal(episode(3), episode(3))
    assert not np.array_equal(episode(3), episode(4))


def test_the_mask_comes_from_the_free_area_and_a_masked_action_is_refused(env):
    _, info = env.reset(seed=2)
    mask = info["action_mask"].astype(bool)
    assert not mask[env.actions.index("pulse +8 V")]  # needs 100 nm free in a 10 nm frame
    assert mask[env.actions.index("stall")]
    tip = env.microscope.tip
    _, reward, _, _, info = env.step(env.actions.index("pulse +8 V"))
    assert info["refused"] and info["outcome"] == "refused"
    assert env.microscope.tip == tip  # nothing done to the tip
    assert reward == pytest.approx(-SCAN_TIME_S / STEP_TIME_S)  # the rescan's time only


def test_a_plain_action_costs_one_and_a_good_tip_earns_ten():
    assert conditioning_reward(STEP_TIME_S, good=False) == pytest.approx(-1.0)
    assert conditioning_reward(STEP_TIME_S, good=True) == pytest.approx(SUCCESS_REWARD - 1)
    with pytest.raises(ValueError, match="elapsed"):
        conditioning_reward(-1.0, good=False)


def test_a_good_tip_ends_the_episode_with_the_bonus(env):
    env.reset(seed=1)
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(env.actions.index("dip -1.2 nm"))
        if terminated:
            assert info["tip_state"] == "good"
            assert reward > 0
            return
        assert reward < 0 and not truncated
    pytest.fail("no good tip within 100 dips")


def test_a_crash_costs_far_more_than_a_pulse(env):
    env.reset(seed=0)
    env.microscope.tip = env.microscope.tip.evolve(crashed=True)
    _, reward, _, _, info = env.step(env.actions.index("stall"))
    assert info["crashes"] == 1
    assert reward < -10


def test_episodes_are_truncated_after_max_actions():
    env = TipConditioningEnv(judge="truth", max_actions=3, start_states=("blunt",))
    env.reset(seed=0)
    stall = env.actions.index("stall")
    flags = [env.step(stall)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_bad_settings_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="judge"):
        TipConditioningEnv(judge="oracle")
    with pytest.raises(ValueError, match="start_states"):
        TipConditioningEnv(start_states=("good",))
    with pytest.raises(ValueError, match="index"):
        env = TipConditioningEnv(judge="truth")
        env.reset(seed=0)
        env.step(99)


def test_the_vector_version_steps_several_stms_and_hands_back_final_frames():
    envs = make_vector_env(2, asynchronous=False, judge="truth")
    try:
        images, info = envs.reset(seed=0)
        assert images.shape == (2, 64, 64) and info["action_mask"].shape == (2, 14)
        dip = load_actions().index("dip -1.0 nm")
        for _ in range(50):
            images, _, terminated, truncated, info = envs.step(np.array([dip, dip]))
            if terminated.any():
                i = int(np.flatnonzero(terminated)[0])
                assert info["final_obs"][i].shape == (64, 64)
                assert info["final_info"]["tip_state"][i] == "good"
                return
        pytest.fail("no episode ended within 50 steps")
    finally:
        envs.close()
