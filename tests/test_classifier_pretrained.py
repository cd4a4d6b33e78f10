"""The shipped tip-classifier weights: they load safely and separate good from bad tips."""

from __future__ import annotations

from importlib import resources

import pytest
import torch

from deepspm_bluesky.ml import TipClassifier, evaluate_scores, simulated_dataset

HELD_OUT_SEED = 2026  # the shipped weights were trained on seeds 0 and 1 (see their record)


@pytest.fixture(scope="module")
def held_out():
    return simulated_dataset(300, seed=HELD_OUT_SEED)


@pytest.fixture(scope="module")
def classifier():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield TipClassifier.pretrained()
    torch.set_num_threads(threads)


def test_the_shipped_weights_reach_roc_auc_098_on_a_held_out_set(classifier, held_out):
    scores = classifier.predict(held_out.images, normalized=True)
    evaluation = evaluate_scores(held_out.labels, scores, held_out.states)
    assert evaluation.roc_auc >= 0.98, evaluation.report()


def test_the_shipped_weights_record_how_they_were_trained(classifier):
    settings = classifier.metadata["settings"]
    assert settings["architecture"] == classifier.architecture == "compact"
    assert isinstance(settings["seed"], int)
    assert classifier.metadata["data"]["test_seed"] != HELD_OUT_SEED
    assert classifier.metadata["test"]["roc_auc"] >= 0.98


def test_the_shipped_weights_are_a_few_megabytes_at_most():
    weights = resources.files("deepspm_bluesky.ml") / "weights" / "tip_classifier.pt"
    assert len(weights.read_bytes()) < 5_000_000
