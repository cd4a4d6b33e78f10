"""The `deepspm-bluesky train-classifier` command."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from deepspm_bluesky.cli import app
from deepspm_bluesky.ml import TipClassifier


def test_train_classifier_trains_records_and_prints_the_test_scores(tmp_path):
    output = tmp_path / "tip.pt"
    result = CliRunner().invoke(app, [
        "train-classifier", "--output", str(output), "--steps", "2", "--seed", "5",
        "--train-images", "16", "--test-images", "10", "--threads", "1",
        "--roc-plot", str(tmp_path / "roc.png"),
    ])
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.output and "accuracy by tip state" in result.output
    record = json.loads(output.with_suffix(".json").read_text())
    assert record["training"]["settings"]["seed"] == 5 and record["data"]["test_seed"] == 1005
    assert TipClassifier.load(output).metadata["settings"]["max_steps"] == 2
    assert (tmp_path / "roc.png").exists()


def test_train_classifier_evaluates_only_when_asked(tmp_path):
    output = TipClassifier().save(tmp_path / "tip.pt")
    result = CliRunner().invoke(app, [
        "train-classifier", "--output", str(output), "--evaluate-only", "--test-images", "10",
        "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.output
    assert not output.with_suffix(".json").exists()


def test_train_classifier_reads_a_folder_of_labelled_images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("good", "bad"):
        (tmp_path / "data" / name).mkdir(parents=True)
        np.save(tmp_path / "data" / name / "stack.npy", rng.normal(0, 1e-11, (20, 64, 64)))
    output = tmp_path / "tip.pt"
    result = CliRunner().invoke(app, [
        "train-classifier", "--output", str(output), "--data", str(tmp_path / "data"),
        "--steps", "2", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    record = json.loads(output.with_suffix(".json").read_text())
    assert record["data"]["folder"] == str(tmp_path / "data")
    assert sum(record["data"]["sizes"].values()) == 40
