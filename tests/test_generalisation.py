"""Leave-one-family-out: retrained rows, and the cheap read-out of the shipped features."""

from __future__ import annotations

import numpy as np

from deepspm_bluesky.ml import LabelledImages, TipClassifier, TrainingSettings
from deepspm_bluesky.ml.generalisation import (
    ALL,
    family_sets,
    leave_one_family_out,
    read_out_rows,
    table,
)


def test_the_read_out_scores_each_held_out_family_and_all_of_them_in_a_table():
    rows = read_out_rows(["au111", "graphite"], n_train=16, n_test=10, seed=3)
    assert [row["held_out"] for row in rows] == ["au111", "graphite", ALL]
    assert "auc_held_out" not in rows[-1]
    for row in rows:
        assert 0.0 <= row["auc_trained"] <= 1.0
        assert row is rows[-1] or 0.0 <= row["auc_held_out"] <= 1.0
    lines = table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[-1].startswith(f"| {ALL} | - |")


def test_a_retrained_row_scores_the_held_out_family_and_saves_its_classifier(tmp_path):
    settings = TrainingSettings(architecture="lean", max_steps=4, batch_size=8, eval_every=2,
                                threads=1)
    seen = []
    rows = leave_one_family_out(["au111", "graphite"], n_train=16, n_test=10, seed=3,
                                settings=settings, held_out=["graphite"], cache=tmp_path,
                                checkpoints=tmp_path / "ckpt", on_row=seen.append)
    assert [row["held_out"] for row in rows] == ["graphite"] and seen == [rows]
    row = rows[0]
    assert 0.0 <= row["auc_held_out"] <= 1.0 and 0.0 <= row["unfamiliar_held_out"] <= 1.0
    saved = TipClassifier.load(tmp_path / "ckpt" / "graphite.pt")
    assert saved.metadata["lofo_row"]["auc_held_out"] == row["auc_held_out"]
    assert saved.familiarity is not None


def test_cached_family_sets_are_read_back_instead_of_simulated_again(tmp_path):
    first = family_sets("graphite", n_train=8, n_test=4, seed=5, cache=tmp_path)
    assert len(list(tmp_path.glob("graphite-*.npz"))) == 3
    for path in tmp_path.glob("graphite-test-*.npz"):
        LabelledImages.load(path).subset(np.arange(2)).save(path)  # mark the cached copy
    again = family_sets("graphite", n_train=8, n_test=4, seed=5, cache=tmp_path)
    assert len(again.test) == 2
    np.testing.assert_array_equal(again.train.images, first.train.images)
