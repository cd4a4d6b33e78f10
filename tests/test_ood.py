"""Knowing when it does not know: the feature density and `TipClassifier.familiar`."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepspm_bluesky.ml import CheckpointError, TipClassifier
from deepspm_bluesky.ml.data import simulated_dataset
from deepspm_bluesky.ml.ood import FeatureDensity, image_statistics
from deepspm_bluesky.sim import FAMILIES


@pytest.fixture(scope="module")
def shipped():
    return TipClassifier.pretrained()


def test_the_density_of_gaussian_features_puts_5_percent_of_held_out_ones_past_its_threshold():
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 10.0, 0.1])
    density = FeatureDensity.fit(rng.normal(0, 1, (4000, 3)) * scale,
                                 rng.normal(0, 1, (4000, 3)) * scale)
    assert_allclose(density.distance(np.zeros((1, 3))), 0.0, atol=0.05)
    fresh = rng.normal(0, 1, (4000, 3)) * scale
    assert 0.03 < np.mean(density.distance(fresh) > density.threshold) < 0.07
    assert np.all(density.distance(np.array([[0.0, 100.0, 0.0]])) > density.threshold)


def test_a_density_survives_its_tensors_and_rejects_mismatched_shapes():
    density = FeatureDensity.fit(np.random.default_rng(1).normal(size=(50, 4)))
    again = FeatureDensity.from_tensors(density.as_tensors())
    assert_allclose(again.precision, density.precision)
    assert again.threshold == density.threshold
    tensors = density.as_tensors()
    tensors["mean"] = tensors["mean"][:3]
    with pytest.raises(ValueError, match="mean of 3 features"):
        FeatureDensity.from_tensors(tensors)


def test_image_statistics_tell_a_lattice_from_noise():
    rng = np.random.default_rng(2)
    noise = rng.normal(-1, 0.05, (1, 64, 64))
    lattice = noise + 0.3 * np.cos(2 * np.pi * np.arange(64) / 4)[None, None, :]
    spectra = image_statistics(np.concatenate([noise, lattice]))
    assert spectra.shape == (2, 24)
    assert spectra[1, :12].max() > spectra[0, :12].max() + 1  # a strong peak at 1/4 px^-1


def test_a_classifier_of_one_surface_knows_it_and_flags_graphite_it_never_saw():
    ag100 = TipClassifier.pretrained("pretrained-ag100")  # trained on the default sample only
    own = simulated_dataset(120, seed=21)
    graphite = simulated_dataset(120, seed=21, families=["graphite"])
    assert np.mean(ag100.familiar(own.images, normalized=True)) >= 0.8
    assert np.mean(ag100.familiar(graphite.images, normalized=True)) <= 0.3


@pytest.mark.parametrize("family", FAMILIES)
def test_the_shipped_classifier_knows_every_family_it_was_trained_on(shipped, family):
    images = simulated_dataset(60, seed=21, families=[family]).images
    assert np.mean(shipped.familiar(images, normalized=True)) >= 0.8


def test_a_frame_outside_the_trained_sizes_is_unfamiliar_whatever_it_shows(shipped):
    images = simulated_dataset(4, seed=22).images
    assert not shipped.familiar(images, normalized=True, frame_nm=60.0).any()
    assert not shipped.familiar(images, normalized=True, frame_nm=1.0).any()


def test_weights_without_a_density_say_so(shipped):
    bare = TipClassifier(network=shipped.network)
    with pytest.raises(RuntimeError, match="fit_familiarity"):
        bare.familiar(np.zeros((64, 64)))


def test_a_fitted_density_is_saved_and_loaded_with_the_weights(tmp_path):
    classifier = TipClassifier()
    data = simulated_dataset(20, seed=3)
    classifier.fit_familiarity(data.images)
    again = TipClassifier.load(classifier.save(tmp_path / "c.pt"))
    assert_allclose(again.unfamiliarity(data.images, normalized=True),
                    classifier.unfamiliarity(data.images, normalized=True), rtol=1e-6)


def test_a_corrupt_density_in_a_checkpoint_is_a_checkpoint_error(tmp_path):
    import torch

    classifier = TipClassifier()
    classifier.fit_familiarity(simulated_dataset(12, seed=4).images)
    path = classifier.save(tmp_path / "c.pt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["familiarity"]["precision"]
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="incomplete feature density"):
        TipClassifier.load(path)


def test_predict_familiar_gives_what_predict_and_familiar_give_apart(shipped):
    images = simulated_dataset(6, seed=23).images
    p_good, familiar = shipped.predict_familiar(images, normalized=True)
    assert_allclose(p_good, shipped.predict(images, normalized=True), rtol=1e-5, atol=1e-7)
    assert np.array_equal(familiar, shipped.familiar(images, normalized=True))


def test_the_fingerprint_names_the_weights_not_the_object(shipped, tmp_path):
    again = TipClassifier.load(shipped.save(tmp_path / "copy.pt"))
    assert again.fingerprint() == shipped.fingerprint()
    assert len(shipped.fingerprint()) == 16
    assert TipClassifier().fingerprint() != shipped.fingerprint()
