"""Adapt in minutes: shipped weights fine-tuned on a surface they never saw judge it better.

The default weights were trained on every simulated family, so the test starts from the
shipped weights of one surface (`pretrained-ag100`), as a user's new sample would find them.
"""

from __future__ import annotations

from deepspm_bluesky.ml import TipClassifier, roc_auc, train_classifier
from deepspm_bluesky.ml.data import simulated_dataset
from deepspm_bluesky.ml.training import TrainingSettings


def test_fine_tuning_the_shipped_weights_on_an_unseen_family_raises_its_roc_auc():
    family = ["molecular_islands"]  # dense islands at both polarities, never in training
    train = simulated_dataset(300, seed=31, families=family)
    validation = simulated_dataset(60, seed=32, families=family)
    test = simulated_dataset(200, seed=33, families=family)
    shipped = TipClassifier.pretrained("pretrained-ag100")  # trained on the default sample
    before = roc_auc(test.labels, shipped.predict(test.images, normalized=True))
    settings = TrainingSettings(max_steps=40, batch_size=16, eval_every=20, patience=3,
                                learning_rate=5e-4, seed=0)  # 0.44 -> 0.69 (measured)
    tuned = train_classifier(train, validation, settings, initial=shipped,
                             progress=False).classifier
    after = roc_auc(test.labels, tuned.predict(test.images, normalized=True))
    assert after > before + 0.05, (before, after)
