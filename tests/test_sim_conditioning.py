"""Actions change the tip with the documented, state-dependent probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.sim import OUTCOMES, STATES, SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.conditioning import (
    apply_action,
    event_probabilities,
    good_after_reform,
    outcome_probabilities,
    repair_probabilities,
    strength,
)
from deepspm_bluesky.sim.tip import BAD_STATES, REPAIRS

ACTIONS = load_actions()
TRIALS = 2000
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


def good_fraction(action_name: str, state: str, seed: int = 0, n: int = 1000) -> float:
    """Fraction of tips of `state` that are good after one `action_name`."""
    rng = np.random.default_rng(seed)
    action = ACTIONS.get(action_name)
    return float(np.mean([apply_action(random_tip(rng, state), action, rng)[0].is_good
                          for _ in range(n)]))


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
    ("dip -1.8 nm", "blunt", 6),
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


@pytest.mark.parametrize("state", BAD_STATES)
def test_each_repair_removes_its_defect_and_only_that_one(state):
    rng = np.random.default_rng(3)
    tip = random_tip(rng, state)
    repaired = REPAIRS[state](tip, rng)
    assert state not in repaired.defects
    assert repaired.is_good  # random_tip draws a single defect


@pytest.mark.parametrize(("state", "best", "worst"), [
    ("contaminated", "pulse +4 V", "dip -1.0 nm"),
    ("unstable", "pulse -4 V", "dip -0.8 nm"),
    ("double", "dip -0.8 nm", "pulse +4 V"),
    ("blunt", "dip -1.8 nm", "pulse +4 V"),
])
def test_the_remedy_that_works_depends_on_the_state(state, best, worst):
    assert good_fraction(best, state) > 0.5
    assert good_fraction(worst, state) < 0.25


def test_no_single_action_repairs_every_bad_state_well():
    for action in ACTIONS:
        rates = [good_fraction(action.name, state, n=300) for state in BAD_STATES]
        assert min(rates) < 0.35, (action.name, rates)


def test_pulses_saturate_at_four_volts_and_do_nothing_for_a_blunt_tip():
    dirty = Tip(contrast=1.0)
    small = repair_probabilities(ACTIONS.get("pulse +2.5 V"), dirty)["contaminated"]
    medium = repair_probabilities(ACTIONS.get("pulse +4 V"), dirty)["contaminated"]
    large = repair_probabilities(ACTIONS.get("pulse -8 V"), dirty)["contaminated"]
    assert small < medium == pytest.approx(large)
    assert repair_probabilities(ACTIONS.get("pulse -8 V"), Tip(blur_m=1e-9))["blunt"] == 0


def test_gentle_dips_sharpen_a_double_tip_better_than_deep_ones():
    double = random_tip(np.random.default_rng(0), "double")
    rates = [repair_probabilities(ACTIONS.get(n), double)["double"]
             for n in ("dip -1.0 nm", "dip -1.8 nm", "dip -5.0 nm")]
    assert rates[0] > rates[1] > rates[2]


def test_a_blunt_tip_needs_a_dip_deeper_than_its_apex():
    blunt = Tip(blur_m=1e-9)
    assert repair_probabilities(ACTIONS.get("dip -0.8 nm"), blunt)["blunt"] == 0
    assert repair_probabilities(ACTIONS.get("dip -1.8 nm"), blunt)["blunt"] >= 0.5


def test_deeper_dips_reform_more_often_and_crash_more_often():
    dips = sorted((a for a in ACTIONS if a.kind == "dip"), key=strength)
    p = [event_probabilities(a, Tip()) for a in dips]
    assert all(a["reform"] < b["reform"] for a, b in zip(p, p[1:], strict=False))
    assert all(a["crash"] < b["crash"] for a, b in zip(p, p[1:], strict=False))


def test_pulses_reform_a_blunt_tip_half_as_often():
    pulse = ACTIONS.get("pulse -8 V")
    sharp = event_probabilities(pulse, Tip())["reform"]
    assert event_probabilities(pulse, Tip(blur_m=1e-9))["reform"] == pytest.approx(sharp / 2)


@pytest.mark.parametrize("state", ["crashed", "no_contact"])
def test_actions_do_nothing_to_a_tip_that_is_not_tunnelling(state):
    tip = random_tip(np.random.default_rng(0), state)
    assert outcome_counts("dip -5.0 nm", tip, 0)["none"] == TRIALS


def test_a_stall_does_nothing():
    assert outcome_counts("stall", random_tip(np.random.default_rng(0), "double"),
                          0)["none"] == TRIALS


def test_the_microscope_draws_outcomes_with_the_same_probabilities():
    microscope = SimulatedMicroscope(seed=3, tip_state="contaminated")
    pulse = ACTIONS.get("pulse +2.5 V")
    p = outcome_probabilities(pulse, microscope.tip)
    start, counts = microscope.tip, dict.fromkeys(OUTCOMES, 0)
    for _ in range(TRIALS):
        microscope.tip = start
        microscope.condition(pulse, 0.0, 0.0)
        counts[microscope.last_outcome] += 1
    for outcome in OUTCOMES:
        assert within_binomial(counts[outcome], TRIALS, p[outcome]), (outcome, counts, p)
