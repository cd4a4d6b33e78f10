"""Training and evaluation of the tip classifier: ROC maths, augmentation, a tiny run."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pytest
import torch

from deepspm_bluesky.ml import (
    LabelledImages,
    TipClassifier,
    TrainingSettings,
    evaluate_scores,
    roc_auc,
    save_roc_plot,
    train_classifier,
)
from deepspm_bluesky.ml.evaluation import roc_curve
from deepspm_bluesky.ml.training import augment
from deepspm_bluesky.ml.workflow import DataSizes, train_and_evaluate


@pytest.fixture(autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _pairwise_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(pos, neg)]
    return np.mean(wins)


def test_roc_auc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_roc_auc_equals_the_fraction_of_correctly_ordered_pairs_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 5, 60) / 4  # many ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both good"):
        roc_auc([1, 1, 1], [0.2, 0.4, 0.6])


def test_the_roc_curve_runs_from_the_origin_to_the_top_right_corner():
    fpr, tpr = roc_curve(np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.8]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_the_confusion_matrix_counts_verdicts_at_the_threshold():
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.95, 0.91, 0.5, 0.92, 0.1])
    evaluation = evaluate_scores(labels, scores, threshold=0.9)
    np.testing.assert_array_equal(evaluation.confusion, [[1, 1], [1, 2]])
    assert evaluation.precision == pytest.approx(2 / 3)
    assert evaluation.recall == pytest.approx(2 / 3)
    assert evaluation.accuracy_by_state == {"good": pytest.approx(2 / 3), "bad": 0.5}
    assert "ROC-AUC" in evaluation.report()


def test_the_roc_plot_is_written_as_an_image(tmp_path):
    evaluation = evaluate_scores(np.array([0, 1, 0, 1]), np.array([0.1, 0.7, 0.6, 0.9]))
    path = save_roc_plot(evaluation, tmp_path / "roc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_augmentation_keeps_shape_and_the_normalised_range():
    generator = torch.Generator().manual_seed(0)
    batch = torch.linspace(-1.5, 1.5, 8 * 64 * 64).reshape(8, 1, 64, 64)
    out = augment(batch, TrainingSettings(contrast=0.5, brightness=0.5), generator)
    assert out.shape == batch.shape
    assert out.min() >= -1.5 and out.max() <= 1.5
    assert not torch.equal(out, batch)


def test_augmentation_only_flips_and_turns_when_intensity_changes_are_off():
    generator = torch.Generator().manual_seed(1)
    batch = torch.rand(16, 1, 64, 64) - 0.5
    out = augment(batch, TrainingSettings(contrast=0.0, brightness=0.0), generator)
    sorted_in = batch.flatten(1).sort(dim=1).values
    torch.testing.assert_close(out.flatten(1).sort(dim=1).values, sorted_in)


def _toy_set(n: int, seed: int) -> LabelledImages:
    """Bad tips streak (a bright line), good ones do not: easy to learn in a few steps."""
    rng = np.random.default_rng(seed)
    images = rng.normal(-1, 0.05, (n, 64, 64)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.float32)
    images[labels == 0, rng.integers(0, 64), :] = 1.0
    return LabelledImages(images, labels, np.where(labels == 1, "good", "streaky"))


def test_a_tiny_training_run_learns_an_easy_problem_and_checkpoints_the_best(tmp_path):
    settings = TrainingSettings(max_steps=30, batch_size=16, eval_every=10, threads=2, seed=1)
    result = train_classifier(_toy_set(64, 0), _toy_set(32, 1), settings,
                              checkpoint=tmp_path / "best.pt", progress=False)
    assert result.best_validation_auc > 0.9
    assert [h["step"] for h in result.history] == [10, 20, 30]
    loaded = TipClassifier.load(tmp_path / "best.pt")
    assert loaded.metadata["settings"]["seed"] == 1
    assert loaded.metadata["best_step"] == result.best_step


class _LinearNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64 * 64, 1)

    def forward(self, x):
        return self.linear(x.flatten(1)).squeeze(1)


def test_training_stops_early_when_validation_stops_improving():
    settings = TrainingSettings(max_steps=200, batch_size=8, eval_every=2, patience=2,
                                learning_rate=0.0, threads=1)
    frozen = TipClassifier("linear", network=_LinearNet())  # lr 0: nothing ever improves
    result = train_classifier(_toy_set(16, 0), _toy_set(16, 1), settings, initial=frozen,
                              progress=False)
    assert result.steps == 6  # the first validation is the best; two more without gain


def test_fine_tuning_leaves_the_initial_classifier_unchanged():
    initial = TipClassifier()
    before = {k: v.clone() for k, v in initial.network.state_dict().items()}
    train_classifier(_toy_set(16, 0), _toy_set(8, 1),
                     TrainingSettings(max_steps=2, batch_size=8, eval_every=1, threads=1),
                     initial=initial, progress=False)
    for name, tensor in initial.network.state_dict().items():
        torch.testing.assert_close(tensor, before[name])


def test_the_train_command_writes_weights_a_record_and_a_roc_plot(tmp_path):
    lines: list[str] = []
    output = tmp_path / "tip.pt"
    record = train_and_evaluate(
        output, settings=TrainingSettings(max_steps=3, batch_size=8, eval_every=1, threads=1),
        sizes=DataSizes(train=16, validation=8, test=12), roc_plot=tmp_path / "roc.png",
        progress=False, echo=lines.append,
    )
    saved = json.loads(output.with_suffix(".json").read_text())
    assert saved["data"]["test_seed"] == 1000 and saved["data"]["sizes"]["test"] == 12
    assert saved["test"]["roc_auc"] == record["test"]["roc_auc"]
    assert TipClassifier.load(output).metadata["data"]["train_seed"] == 0
    assert (tmp_path / "roc.png").exists()
    assert any("ROC-AUC" in line for line in lines)


def test_evaluate_only_reads_the_checkpoint_and_writes_nothing(tmp_path):
    output = TipClassifier().save(tmp_path / "tip.pt")
    before = output.read_bytes()
    record = train_and_evaluate(output, sizes=DataSizes(test=10), evaluate_only=True,
                                progress=False, echo=lambda line: None)
    assert "training" not in record and record["data"]["sizes"]["test"] == 10
    assert output.read_bytes() == before
    assert not output.with_suffix(".json").exists()


def test_training_stops_at_its_time_limit_after_a_last_validation():
    settings = TrainingSettings(max_steps=10_000, batch_size=8, eval_every=1000,
                                time_limit_s=0.0, threads=1)
    result = train_classifier(_toy_set(16, 0), _toy_set(8, 1), settings, progress=False)
    assert result.steps == 1 and [h["step"] for h in result.history] == [1]


def test_a_fine_tuned_classifier_records_the_architecture_it_started_from():
    initial = TipClassifier("linear", network=_LinearNet())
    result = train_classifier(_toy_set(16, 0), _toy_set(8, 1),
                              TrainingSettings(max_steps=1, batch_size=8, threads=1),
                              initial=initial, progress=False)
    assert result.classifier.architecture == "linear"
    assert result.classifier.metadata["settings"]["architecture"] == "linear"
