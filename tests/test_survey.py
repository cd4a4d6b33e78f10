"""The survey plan on the simulated STM: messages, streams, decisions, modes."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.plans import count
from bluesky.utils import FailedStatus

from deepspm_bluesky.callbacks import SurveyProgress
from deepspm_bluesky.data import open_catalog, tiled_writer
from deepspm_bluesky.devices import STM, simulated_stm
from deepspm_bluesky.ml import TipClassifier
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.sim import SimulatedMicroscope


def always(p_good: float):
    return lambda image: p_good


def events(documents, stream: str) -> list[dict]:
    descriptors = {d["uid"] for n, d in documents if n == "descriptor" and d["name"] == stream}
    return [d for n, d in documents if n == "event" and d["descriptor"] in descriptors]


def test_the_plan_opens_one_run_and_saves_one_primary_event_per_image(RE, stm):
    messages = []
    RE.msg_hook = messages.append
    RE(autonomous_survey(stm, max_images=3))
    commands = [m.command for m in messages]
    assert commands[0] == "open_run" and commands[-1] == "close_run"
    assert commands.count("open_run") == 1
    creates = [m.kwargs.get("name") for m in messages if m.command == "create"]
    assert creates == ["primary"] * 3
    assert commands.count("trigger") == 3


def test_each_primary_event_carries_image_position_and_verdict(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=5))
    primary = events(documents, "primary")
    assert len(primary) == 5
    data = primary[0]["data"]
    assert np.asarray(data["stm_image"]).shape == (64, 64)
    assert {"stm_scanner_x_nm", "stm_scanner_y_nm", "verdict", "check", "p_good"} <= set(data)
    positions = {(e["data"]["stm_scanner_x_nm"], e["data"]["stm_scanner_y_nm"]) for e in primary}
    assert len(positions) == 5, "every image is taken at a new place"


def test_a_survey_lands_in_the_catalog_with_float32_images(RE, stm, catalog_dir):
    client = open_catalog(catalog_dir)
    RE.subscribe(tiled_writer(client))
    RE(autonomous_survey(stm, max_images=12, md={"sample": "Ag(100)"}))
    run = client[-1]
    images = run["primary"]["stm_image"]
    assert images.shape == (12, 64, 64)
    assert images.dtype == np.float32
    assert run.metadata["start"]["sample"] == "Ag(100)"
    assert run.metadata["stop"]["num_events"]["primary"] == 12
    table = run["primary"].base["internal"].read(["verdict"])
    assert set(table["verdict"]) <= {"good", "bad", "crash", "no_contact", "debris"}


def test_operational_mode_conditions_only_after_ten_bad_images(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=12, classifier=always(0.1)))
    actions = events(documents, "actions")
    primary = events(documents, "primary")
    bad_before = [e["seq_num"] for e in primary if e["data"]["verdict"] == "bad"]
    assert len(bad_before) >= 10
    assert 1 <= len(actions) <= 3
    assert actions[0]["data"]["reason"] == "bad tip"
    assert actions[0]["time"] > primary[9]["time"]


def test_training_mode_damages_a_good_tip_with_five_reset_actions(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=1, mode="training", classifier=always(0.99)))
    actions = events(documents, "actions")
    assert [a["data"]["reason"] for a in actions] == ["reset"] * 5
    reset_names = {a.name for a in stm.actions if a.reset}
    assert {a["data"]["action"] for a in actions} <= reset_names


def test_a_crashed_tip_is_cleaned_and_the_survey_goes_on(RE, documents):
    stm = simulated_stm(seed=1, tip_state="crashed")
    RE(autonomous_survey(stm, max_images=3))
    primary = events(documents, "primary")
    assert [e["data"]["check"] for e in primary][:2] == ["crash", "ok"]
    assert len(primary) == 3
    assert events(documents, "actions")[0]["data"]["action"] == "clean"


class UncleanableMicroscope(SimulatedMicroscope):
    """A microscope whose tip stays crashed whatever the cleaning does."""

    def tip_clean(self, x_m: float, y_m: float) -> bool:
        return True


def test_a_second_crash_in_a_row_ends_the_run_cleanly(RE, documents):
    stm = STM(backend=UncleanableMicroscope(seed=1, tip_state="crashed"), name="stm")
    RE(autonomous_survey(stm, max_images=20))
    assert len(events(documents, "primary")) == 2
    stop = [d for n, d in documents if n == "stop"][0]
    assert stop["exit_status"] == "fail"
    assert "2 crashes in a row" in stop["reason"]


def test_lost_contact_is_recovered_by_an_approach(RE, documents):
    stm = simulated_stm(seed=1, tip_state="no_contact")
    RE(autonomous_survey(stm, max_images=2))
    primary = events(documents, "primary")
    assert [e["data"]["check"] for e in primary] == ["no_contact", "ok"]
    assert events(documents, "actions")[0]["data"]["action"] == "approach"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"mode": "dreaming"}, "mode must be one of"), ({"max_images": 0}, "max_images"),
     ({"max_images": 2.5}, "whole number"), ({"max_images": True}, "whole number"),
     ({"min_free_mb": float("nan")}, "min_free_mb")],
)
def test_bad_plan_arguments_are_refused_before_any_message(stm, options, message):
    with pytest.raises(ValueError, match=message):
        autonomous_survey(stm, **options)


def test_suggestions_reach_tiled_with_their_allowed_set_and_q_values(RE, stm, catalog_dir):
    client = open_catalog(catalog_dir)
    RE.subscribe(tiled_writer(client))
    RE(autonomous_survey(stm, max_images=4, mode="training", classifier=always(0.0)))
    actions = client[-1]["actions"]
    n = len(stm.actions)
    assert actions["allowed"].shape == actions["q_values"].shape == (4, n)
    assert actions["allowed"][:].dtype == bool


def test_the_progress_bar_counts_primary_images_of_any_plan(RE, stm):
    progress = SurveyProgress(disable=True)
    RE.subscribe(progress)
    RE(autonomous_survey(stm, max_images=4))
    assert sum(progress.verdicts.values()) == 4
    RE(count([stm], 3))
    assert not progress.verdicts, "a plan without verdicts counts none"


class FailingMicroscope(SimulatedMicroscope):
    """A microscope whose controller stops answering after `scans_left` scans."""

    def __init__(self, scans_left: int, **options) -> None:
        super().__init__(**options)
        self.scans_left = scans_left

    def scan(self, x_m, y_m, size_m, pixels):
        if self.scans_left == 0:
            raise ConnectionError("controller stopped answering")
        self.scans_left -= 1
        return super().scan(x_m, y_m, size_m, pixels)


def test_a_failing_instrument_leaves_the_run_closed_with_its_images_stored(RE, catalog_dir):
    client = open_catalog(catalog_dir)
    RE.subscribe(tiled_writer(client))
    stm = STM(backend=FailingMicroscope(4, seed=2), name="stm")
    with pytest.raises(FailedStatus) as failure:
        RE(autonomous_survey(stm, max_images=20))
    assert "stopped answering" in str(failure.value.__cause__)
    run = client[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "stopped answering" in run.metadata["stop"]["reason"]
    assert run["primary"]["stm_image"].shape == (4, 64, 64)


def test_a_survey_resumed_from_its_navigation_file_scans_new_ground(RE, documents, tmp_path):
    state = str(tmp_path / "navigation.npz")
    RE(autonomous_survey(simulated_stm(seed=4), max_images=6, navigation_file=state))
    first = {(e["data"]["stm_scanner_x_nm"], e["data"]["stm_scanner_y_nm"])
             for e in events(documents, "primary")}
    documents.clear()
    RE(autonomous_survey(simulated_stm(seed=4), max_images=6, navigation_file=state))
    second = {(e["data"]["stm_scanner_x_nm"], e["data"]["stm_scanner_y_nm"])
              for e in events(documents, "primary")}
    assert len(first) == len(second) == 6
    assert not first & second


def test_a_bad_tip_is_conditioned_inside_the_image_it_was_judged_on(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=3, mode="training", classifier=always(0.0)))
    primary, actions = events(documents, "primary"), events(documents, "actions")
    assert len(actions) == 3
    half = stm.scanner.size_nm.get() / 2
    for image, action in zip(primary, actions, strict=True):
        assert action["data"]["reason"] == "bad tip"
        assert abs(action["data"]["x_nm"] - image["data"]["stm_scanner_x_nm"]) <= half
        assert abs(action["data"]["y_nm"] - image["data"]["stm_scanner_y_nm"]) <= half
        assert image["data"]["free_nm"] >= stm.actions.get(action["data"]["action"]).require_free_nm


def test_by_default_the_shipped_classifier_judges_every_clean_image(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=4))
    primary = [e for e in events(documents, "primary") if e["data"]["check"] == "ok"]
    assert primary
    images = np.stack([np.asarray(e["data"]["stm_image"]) for e in primary])
    expected = TipClassifier.pretrained().predict(images)
    recorded = [e["data"]["p_good"] for e in primary]
    np.testing.assert_allclose(recorded, expected, rtol=1e-5)
    for event, p in zip(primary, recorded, strict=True):
        assert event["data"]["verdict"] == ("good" if p >= 0.9 else "bad")


@pytest.mark.parametrize("given", [None, "pretrained-ag100"])
def test_the_start_document_names_the_weights_that_judge_the_run(RE, documents, stm, given):
    RE(autonomous_survey(stm, max_images=1, classifier=given))
    judged_by = documents[0][1]["classifier"]
    shipped = TipClassifier.pretrained(given or "pretrained")
    assert judged_by == {"name": given or "pretrained", "architecture": shipped.architecture,
                         "fingerprint": shipped.fingerprint()}


def test_a_classifier_of_its_own_is_named_by_its_function_or_class(RE, documents, stm):
    RE(autonomous_survey(stm, max_images=1, classifier=always(0.95)))
    assert documents[0][1]["classifier"] == {"name": "always.<locals>.<lambda>"}


def test_training_learns_live_and_records_suggestions_and_episodes(RE, documents):
    from deepspm_bluesky.ml import AgentSettings, ConditioningAgent

    agent = ConditioningAgent(settings=AgentSettings(learning_starts=8, batch_size=8))
    before = [p.detach().clone() for p in agent.network.parameters()]
    stm = simulated_stm(seed=3, tip_state="double")
    RE(autonomous_survey(stm, max_images=40, mode="training", agent=agent))
    after = list(agent.network.parameters())
    assert any(not (a == b).all() for a, b in zip(before, after, strict=True)), "it learned"
    actions = [e["data"] for e in events(documents, "actions") if e["data"]["reason"] == "bad tip"]
    assert actions
    for action in actions:
        assert action["allowed"][action["action_index"]]
        q_known = np.isfinite(action["q_values"]).all()
        assert q_known == (action["chooser"] == "agent")
    episodes = [e["data"] for e in events(documents, "episodes")]
    assert episodes, "a good tip ended at least one episode"
    assert {e["chooser"] for e in episodes} <= {"agent", "random"}
    for episode in episodes:
        assert episode["chooser"] == ("agent" if episode["episode"] % 2 else "random")


class Unfamiliar:
    """A classifier that finds every image bad and unlike its training data."""

    def __call__(self, image):
        return 0.0

    def predict_familiar(self, image, *, normalized=None):
        return np.array([0.0]), np.array([False])


def test_operational_mode_never_conditions_on_unfamiliar_images(RE, documents, stm, capsys):
    RE(autonomous_survey(stm, max_images=14, classifier=Unfamiliar()))
    primary = events(documents, "primary")
    assert [e["data"]["familiar"] for e in primary if e["data"]["check"] == "ok"]
    assert not any(e["data"]["familiar"] for e in primary if e["data"]["check"] == "ok")
    assert not [e for e in events(documents, "actions") if e["data"]["reason"] == "bad tip"]
    assert capsys.readouterr().out.count("train-classifier --init pretrained") == 1
