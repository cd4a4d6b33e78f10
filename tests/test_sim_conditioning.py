"""Actions change the tip with the documented probabilities (fixed seeds, binomial bounds)."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.sim import OUTCOMES, STATES, SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.conditioning import (
    apply_action,
    good_after_reform,
    outcome_probabilities,
    strength,
)

ACTIONS = load_actions()
TRIALS = 4000
Z_BOUND = 4.5  # a frequency this many binomial standard errors off fails


def within_binomial(count: int, n: int, p: float) -> bool:
    """Is `count` of `n` compatible with probability `p` (Z_BOUND standard errors)?"""
    se = np.sqrt(max(p * (1 - p), 1e-12) / n)
    return abs(count / n - p) <= Z_BOUND * se + 1 / n


def outcome_counts(action_name: str, tip: Tip, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    action = ACTIONS.get(action_name)
    outcomes = [apply_action(tip, action, rng)[1] for _ in range(TRIALS)]
    return {o: outcomes.count(o) for o in OUTCOMES}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ACTIONS, ids=ACTIONS.names)
def test_outcome_probabilities_are_a_distribution(action, state):
    p = outcome_probabilities(action, random_tip(np.random.default_rng(0), state))
    assert set(p) == set(OUTCOMES)
    assert min(p.values()) >= 0
    assert sum(p.values()) == pytest.approx(1)


@pytest.mark.parametrize(("action_name", "state", "seed"), [
    ("pulse +2.5 V", "double", 1),
    ("pulse -8 V", "contaminated", 2),
    ("pulse +4 V", "blunt", 3),
    ("dip -0.8 nm", "unstable", 4),
    ("dip -5.0 nm", "double", 5),
    ("dip -1.8 nm", "good", 6),
])
def test_outcomes_occur_with_the_documented_probabilities(action_name, state, seed):
    tip = random_tip(np.random.default_rng(seed), state)
    p = outcome_probabilities(ACTIONS.get(action_name), tip)
    counts = outcome_counts(action_name, tip, seed)
    for outcome in OUTCOMES:
        assert within_binomial(counts[outcome], TRIALS, p[outcome]), (outcome, counts, p)


@pytest.mark.parametrize("action_name", ["pulse +8 V", "dip -5.0 nm", "dip -1.0 nm"])
def test_a_reformed_apex_is_good_with_the_documented_probability(action_name):
    action, rng = ACTIONS.get(action_name), np.random.default_rng(11)
    tip = random_tip(rng, "double")
    results = [apply_action(tip, action, rng) for _ in range(TRIALS)]
    reformed = [new for new, outcome in results if outcome == "reform"]
    good = sum(new.is_good for new in reformed)
    assert within_binomial(good, len(reformed), good_after_reform(action))


def test_small_pulses_mostly_leave_the_tip_alone_or_change_it_a_little():
    for name in ("pulse +2.5 V", "pulse -2.5 V"):
        p = outcome_probabilities(ACTIONS.get(name), Tip())
        assert p["none"] + p["perturb"] >= 0.9


def test_large_dips_mostly_reform_the_apex():
    assert outcome_probabilities(ACTIONS.get("dip -5.0 nm"), Tip())["reform"] >= 0.85


def test_deeper_dips_reform_more_often_and_crash_more_often():
    dips = [a for a in ACTIONS if a.kind == "dip"]
    p = [outcome_probabilities(a, Tip()) for a in sorted(dips, key=strength)]
    assert all(a["reform"] < b["reform"] for a, b in zip(p, p[1:], strict=False))
    assert all(a["crash"] < b["crash"] for a, b in zip(p, p[1:], strict=False))


def test_pulses_clean_only_a_tip_with_something_to_clean():
    pulse = ACTIONS.get("pulse +4 V")
    assert outcome_probabilities(pulse, Tip())["clean"] == 0
    assert outcome_probabilities(pulse, Tip(contrast=1.0))["clean"] > 0.2


def test_pulses_reform_a_blunt_tip_half_as_often():
    pulse = ACTIONS.get("pulse -8 V")
    sharp = outcome_probabilities(pulse, Tip())["reform"]
    assert outcome_probabilities(pulse, Tip(blur_m=1e-9))["reform"] == pytest.approx(sharp / 2)


@pytest.mark.parametrize("state", ["crashed", "no_contact"])
def test_actions_do_nothing_to_a_tip_that_is_not_tunnelling(state):
    tip = random_tip(np.random.default_rng(0), state)
    assert outcome_counts("dip -5.0 nm", tip, 0)["none"] == TRIALS


def test_a_stall_does_nothing():
    assert outcome_counts("stall", Tip(), 0)["none"] == TRIALS


def test_the_microscope_draws_outcomes_with_the_same_probabilities():
    microscope = SimulatedMicroscope(seed=3)
    pulse = ACTIONS.get("pulse +2.5 V")
    p = outcome_probabilities(pulse, microscope.tip)
    start, counts = microscope.tip, dict.fromkeys(OUTCOMES, 0)
    for _ in range(TRIALS):
        microscope.tip = start
        microscope.condition(pulse, 0.0, 0.0)
        counts[microscope.last_outcome] += 1
    for outcome in OUTCOMES:
        assert within_binomial(counts[outcome], TRIALS, p[outcome]), (outcome, counts, p)
