"""LiveTipClassification: a callback that classifies every image of any run, never crashing it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bluesky.plans import count
from ophyd.sim import det

from deepspm_bluesky.callbacks import LiveTipClassification
from deepspm_bluesky.devices import simulated_stm


class CountingClassifier:
    """Says P(good) = 0.95 and remembers the images it was shown."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> float:
        self.images.append(image)
        return 0.95


def failing_classifier(image: np.ndarray) -> float:
    raise RuntimeError("the network fell over")


def test_every_image_of_a_count_gets_a_row(RE, stm):
    live = LiveTipClassification(CountingClassifier(), out=None)
    RE(count([stm], 3), live)
    assert [row.seq_num for row in live.rows] == [1, 2, 3]
    assert {row.key for row in live.rows} == {"stm_image"}
    assert all(row.p_good == 0.95 and row.tip == "good" for row in live.rows)


def test_the_classifier_sees_the_raw_height_images(RE, stm):
    classifier = CountingClassifier()
    RE(count([stm], 2), LiveTipClassification(classifier, out=None))
    assert [image.shape for image in classifier.images] == [(64, 64), (64, 64)]
    assert np.abs(classifier.images[0]).max() < 1e-3  # metres, not normalised


def test_a_probability_below_the_threshold_calls_the_tip_bad(RE, stm):
    live = LiveTipClassification(lambda image: 0.5, threshold=0.9, out=None)
    RE(count([stm]), live)
    assert live.rows[0].tip == "bad"


def test_a_failing_classifier_never_crashes_the_run(RE, stm, documents):
    live = LiveTipClassification(failing_classifier, out=None)
    RE(count([stm], 2), live)
    assert documents[-1][1]["exit_status"] == "success"
    assert all("the network fell over" in row.error for row in live.rows)
    assert all(math.isnan(row.p_good) for row in live.rows)


def test_a_broken_document_is_logged_not_raised(caplog):
    live = LiveTipClassification(CountingClassifier(), out=None)
    live("descriptor", {"no": "keys"})
    assert "run goes on" in caplog.text


def test_an_image_that_fails_the_fast_checks_is_not_shown_to_the_classifier(RE):
    crashed = simulated_stm(seed=1, tip_state="crashed")
    classifier = CountingClassifier()
    live = LiveTipClassification(classifier, out=None)
    RE(count([crashed]), live)
    crashed.destroy()
    assert live.rows[0].check == "crash"
    assert classifier.images == [] and math.isnan(live.rows[0].p_good)


def test_runs_without_images_add_no_rows(RE):
    live = LiveTipClassification(CountingClassifier(), out=None)
    RE(count([det], 3), live)
    assert live.rows == []


def test_the_table_has_a_header_and_one_line_per_image(RE, stm):
    printed: list[str] = []
    live = LiveTipClassification(CountingClassifier(), out=printed.append)
    RE(count([stm], 2), live)
    assert printed == live.table().splitlines()
    assert printed[0].split()[:2] == ["run", "stream"] and len(printed) == 3
    assert live.to_records()[0]["key"] == "stm_image"


@pytest.mark.parametrize("images", [1, 3])
def test_the_shipped_classifier_is_the_default(RE, stm, images):
    live = LiveTipClassification(out=None)
    RE(count([stm], images), live)
    assert len(live.rows) == images
    assert all(0 <= row.p_good <= 1 for row in live.rows)


def test_the_survey_and_the_live_callback_agree_on_p_good(RE, stm, documents):
    from deepspm_bluesky.ml import TipClassifier
    from deepspm_bluesky.plans import autonomous_survey

    classifier = TipClassifier.pretrained()
    live = LiveTipClassification(classifier, out=None)
    RE(autonomous_survey(stm, max_images=4, classifier=classifier), live)
    primary = {d["uid"] for name, d in documents if name == "descriptor" and d["name"] == "primary"}
    recorded = [d["data"]["p_good"] for name, d in documents
                if name == "event" and d["descriptor"] in primary]
    live_p = [row.p_good for row in live.rows if row.stream == "primary"]
    assert len(recorded) == 4
    np.testing.assert_allclose(live_p, recorded, rtol=1e-6, equal_nan=True)
