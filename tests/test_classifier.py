"""TipClassifier: probabilities from raw or normalised images, networks, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepspm_bluesky.imaging import flatten_plane, normalize
from deepspm_bluesky.ml import CheckpointError, DeepSPMNet, TipClassifier
from deepspm_bluesky.ml.networks import LineDifferences
from deepspm_bluesky.ml.preprocessing import preprocess
from deepspm_bluesky.sim import SimulatedMicroscope


@pytest.fixture(autouse=True)
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def raw_images() -> np.ndarray:
    microscope = SimulatedMicroscope(seed=4)
    return np.stack([microscope.scan(x, 0.0, 10e-9, 64) for x in (-100e-9, 0.0, 100e-9)])


def test_predict_gives_one_probability_per_image(raw_images):
    p = TipClassifier().predict(raw_images)
    assert p.shape == (3,)
    assert np.all((p >= 0) & (p <= 1))


def test_calling_the_classifier_on_one_image_gives_a_float(raw_images):
    p = TipClassifier()(raw_images[0])
    assert isinstance(p, float) and 0 <= p <= 1


def test_raw_and_normalised_images_give_the_same_probability(raw_images):
    classifier = TipClassifier()
    normalised = np.stack([normalize(flatten_plane(image)) for image in raw_images])
    np.testing.assert_allclose(classifier.predict(normalised), classifier.predict(raw_images),
                               rtol=1e-5)


def test_a_single_image_and_a_stack_of_one_agree(raw_images):
    classifier = TipClassifier()
    assert classifier.predict(raw_images[0])[0] == pytest.approx(
        classifier.predict(raw_images[:1])[0])


@pytest.mark.parametrize("shape", [(32, 32), (2, 64, 32), (64,), (1, 1, 64, 64)])
def test_images_of_the_wrong_shape_are_refused_with_their_shape(shape):
    with pytest.raises(ValueError, match=r"64, 64"):
        TipClassifier().predict(np.zeros(shape))


def test_an_image_with_nan_is_refused():
    image = np.zeros((64, 64))
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TipClassifier().predict(image)


def test_normalised_images_outside_the_clip_range_are_refused():
    with pytest.raises(ValueError, match=r"\[-1.5, 1.5\]"):
        TipClassifier().predict(np.full((64, 64), 3.0), normalized=True)


def test_the_paper_network_gives_one_logit_per_image():
    network = DeepSPMNet().eval()
    with torch.inference_mode():
        assert network(torch.zeros(2, 1, 64, 64)).shape == (2,)


def test_an_unknown_architecture_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="compact"):
        TipClassifier("resnet")


def test_a_saved_classifier_loads_with_identical_predictions(tmp_path, raw_images):
    classifier = TipClassifier(metadata={"seed": 3})
    path = classifier.save(tmp_path / "c.pt")
    loaded = TipClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(raw_images), classifier.predict(raw_images))
    assert loaded.metadata == {"seed": 3}


def test_weights_of_another_architecture_are_refused_with_a_clear_error(tmp_path):
    path = TipClassifier("compact").save(tmp_path / "c.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["architecture"] = "deepspm"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the 'deepspm' network"):
        TipClassifier.load(path)


def test_weights_of_the_wrong_shape_are_refused_with_a_clear_error(tmp_path):
    path = TipClassifier("compact").save(tmp_path / "c.pt")
    checkpoint = torch.load(path, weights_only=True)
    name = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][name] = torch.zeros(3, 3)
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="size mismatch"):
        TipClassifier.load(path)


def test_a_file_that_is_not_a_torch_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        TipClassifier.load(path)


def test_a_torch_file_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a tip-classifier checkpoint"):
        TipClassifier.load(path)


def test_a_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no classifier checkpoint"):
        TipClassifier.load(tmp_path / "absent.pt")


def test_the_lean_network_is_compact_at_half_the_width_and_loads_by_name(tmp_path, raw_images):
    lean = TipClassifier("lean")
    widths = [m.out_channels for m in lean.network.trunk.modules()
              if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 16, 16, 32, 32, 48, 48]
    loaded = TipClassifier.load(lean.save(tmp_path / "lean.pt"))
    assert loaded.architecture == "lean"
    np.testing.assert_array_equal(loaded.predict(raw_images), lean.predict(raw_images))


def test_line_differences_add_each_scan_lines_change_from_the_one_before():
    rows = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 3)
    both = LineDifferences()(rows)
    assert both.shape == (1, 2, 4, 3)
    assert torch.equal(both[:, :1], rows)
    assert torch.equal(both[0, 1, :, 0], torch.tensor([0.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("architecture", ["lean-lines", "compact-lines"])
def test_a_lines_network_loads_by_name_and_judges_alike_on_its_fast_path(
        tmp_path, raw_images, architecture):
    classifier = TipClassifier(architecture)
    classifier.fit_familiarity(preprocess(raw_images))
    loaded = TipClassifier.load(classifier.save(tmp_path / "lines.pt"))
    np.testing.assert_array_equal(loaded.predict(raw_images), classifier.predict(raw_images))
    p_good, _ = loaded.predict_familiar(raw_images)
    np.testing.assert_allclose(p_good, classifier.predict(raw_images), rtol=1e-5, atol=1e-7)
