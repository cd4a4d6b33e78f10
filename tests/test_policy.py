"""The survey policy alone: judgements in, steps out, state saved and restored. No RunEngine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.imaging import FreeSquare
from deepspm_bluesky.judging import Judgement
from deepspm_bluesky.navigation import Navigator
from deepspm_bluesky.policy import (
    BAD_IMAGES_BEFORE_CONDITIONING,
    MAX_EPISODE_ACTIONS,
    RESET_ACTIONS_IN_TRAINING,
    Act,
    Condition,
    End,
    EpisodeEnd,
    Move,
    NewArea,
    Recover,
    SurveyPolicy,
)

ACTIONS = load_actions()
SQUARE = FreeSquare(row=32.0, col=32.0, size_px=30, size_nm=4.7, x_nm=1.5, y_nm=-2.0)
ALLOWED = ACTIONS.allowed(SQUARE.size_nm)


def judged(check: str = "ok", p_good: float = 0.99) -> Judgement:
    return Judgement(check, p_good if check == "ok" else math.nan, SQUARE, ALLOWED)


def policy(**options) -> SurveyPolicy:
    return SurveyPolicy(Navigator(850.0), ACTIONS, **{"max_images": 100, **options})


def run_cycle(p: SurveyPolicy, judgement: Judgement) -> list:
    steps = p.next_frame()
    assert isinstance(steps[-1], Move)
    return p.judged(judgement)


def test_a_good_tip_needs_no_step_and_moves_on_to_new_ground():
    p = policy()
    first = p.next_frame()
    assert p.judged(judged()) == []
    second = p.next_frame()
    assert first != second


def test_operational_mode_conditions_only_after_ten_bad_images_in_a_row():
    p = policy()
    for _ in range(BAD_IMAGES_BEFORE_CONDITIONING - 1):
        assert run_cycle(p, judged(p_good=0.1)) == []
    (step,) = run_cycle(p, judged(p_good=0.1))
    assert isinstance(step, Condition)
    x_nm, y_nm = p.nav.position
    assert (step.x_nm, step.y_nm) == (x_nm + SQUARE.x_nm, y_nm + SQUARE.y_nm)
    np.testing.assert_array_equal(step.allowed, ALLOWED)


def test_training_mode_conditions_at_once_and_resets_a_good_tip():
    p = policy(mode="training", seed=3)
    assert isinstance(run_cycle(p, judged(p_good=0.1))[0], Condition)
    p.acted(0, *p.nav.position)
    steps = run_cycle(p, judged(p_good=0.99))
    assert steps[0] == EpisodeEnd(episode=1, actions=1, outcome="good tip", chooser="agent")
    resets = steps[1:]
    assert len(resets) == RESET_ACTIONS_IN_TRAINING
    assert all(isinstance(s, Act) and s.reason == "reset" for s in resets)
    assert {s.index for s in resets} <= set(ACTIONS.reset_indices())


def test_a_crash_is_cleaned_and_a_second_in_a_row_ends_the_survey_as_failed():
    p = policy()
    assert run_cycle(p, judged("crash")) == [Recover("clean", "crash")]
    (end,) = run_cycle(p, judged("crash"))
    assert isinstance(end, End) and end.exit_status == "fail"
    assert "2 crashes in a row" in end.reason


def test_lost_contact_is_approached_until_three_in_a_row_end_the_survey():
    p = policy()
    assert run_cycle(p, judged("no_contact")) == [Recover("approach", "no_contact")]
    assert run_cycle(p, judged("no_contact")) == [Recover("approach", "no_contact")]
    (end,) = run_cycle(p, judged("no_contact"))
    assert end.exit_status == "fail" and "no tunnelling contact" in end.reason


def test_contact_regained_resets_the_count():
    p = policy()
    for _ in range(4):
        assert isinstance(run_cycle(p, judged("no_contact"))[0], Recover)
        assert run_cycle(p, judged()) == []


def test_debris_forbids_a_growing_disc_and_changes_area_at_the_limit(monkeypatch):
    p = policy()
    monkeypatch.setattr("deepspm_bluesky.navigation.MAX_DEBRIS_TRIES", 3)
    free = p.nav.free.sum()
    assert run_cycle(p, judged("debris")) == []
    assert p.nav.free.sum() < free
    assert run_cycle(p, judged("debris")) == []
    (step,) = run_cycle(p, judged("debris"))
    assert step == NewArea("debris everywhere")
    assert p.nav.area_index == 1 and p.nav.free.all()


def test_the_survey_ends_after_max_images_and_on_request():
    p = policy(max_images=2)
    run_cycle(p, judged())
    run_cycle(p, judged())
    (end,) = p.next_frame()
    assert end == End("success", "took the 2 images asked for")
    q = policy()
    q.request_end("success", "stopped by the STOP file")
    assert q.next_frame() == [End("success", "stopped by the STOP file")]


def test_a_used_up_area_leads_to_a_coarse_move_first():
    p = policy()
    p.nav.free[:] = False
    steps = p.next_frame()
    assert isinstance(steps[0], NewArea) and isinstance(steps[1], Move)


def test_the_summary_counts_images_verdicts_and_actions_by_kind():
    p = policy(mode="training")
    run_cycle(p, judged(p_good=0.1))
    p.acted(ACTIONS.index("stall for measurement"), 0.0, 0.0)
    run_cycle(p, judged("crash"))
    p.recovered("clean")
    summary = p.summary()
    assert summary["images"] == 2
    assert summary["image_bad"] == 1 and summary["image_crash"] == 1
    assert summary["action_stall"] == 1 and summary["recovery_clean"] == 1
    assert summary["good_tip_fraction"] == 0.0


def test_state_restores_counters_and_random_resets_exactly():
    p = policy(mode="training", seed=5)
    for verdict in ("crash", "ok"):
        run_cycle(p, judged(verdict, p_good=0.1))
    saved = json.loads(json.dumps(p.state()))
    q = policy(mode="training", seed=99)
    q.restore(saved)
    assert vars(q.counters) == {**vars(p.counters), "images": 0}
    assert q.tally == p.tally
    p.nav.move_to(0.0, 0.0)
    q.nav.move_to(0.0, 0.0)
    assert p.judged(judged()) == q.judged(judged())  # same random reset actions


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(format="other"), "not a deepspm-bluesky survey policy"),
        (lambda s: s.update(version=9), "version 9"),
        (lambda s: s["counters"].update(bad_in_row=-1), "counters.bad_in_row"),
        (lambda s: s["counters"].update(episode=1.5), "counters.episode"),
        (lambda s: s["counters"].pop("episode"), "must hold exactly"),
        (lambda s: s.update(rng={"bit_generator": "nope"}), "'rng'"),
    ],
)
def test_a_state_out_of_range_is_rejected_naming_the_file_and_field(change, message):
    state = policy().state()
    change(state)
    with pytest.raises(ValueError, match=message) as error:
        policy().restore(state, source="/tmp/s/policy.json")
    assert "/tmp/s/policy.json" in str(error.value)


def test_max_images_must_be_a_whole_number_of_at_least_one():
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="max_images"):
            policy(max_images=bad)


def test_an_episode_of_a_hundred_actions_ends_in_a_new_approach_area():
    p = policy(mode="training", max_images=1000)
    for _ in range(MAX_EPISODE_ACTIONS):
        (step,) = run_cycle(p, judged(p_good=0.1))
        p.acted(0, step.x_nm, step.y_nm)
    steps = run_cycle(p, judged(p_good=0.1))
    assert isinstance(steps[0], EpisodeEnd) and "100 actions" in steps[0].outcome
    assert isinstance(steps[1], NewArea) and isinstance(steps[2], Condition)
    assert steps[2].chooser == "random", "training alternates agent and random episodes"


def test_unfamiliar_images_are_not_conditioned_on_in_operational_mode():
    p = policy()
    unfamiliar = Judgement("ok", 0.1, SQUARE, ALLOWED, familiar=False)
    for _ in range(2 * BAD_IMAGES_BEFORE_CONDITIONING):
        assert run_cycle(p, unfamiliar) == []
    assert p.summary()["image_unfamiliar"] == 2 * BAD_IMAGES_BEFORE_CONDITIONING
