"""Labelled data for the tip classifier: simulated sets and folders of .npy images."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from real_files import nanonis_stm_sxm

from deepspm_bluesky import sim
from deepspm_bluesky.ml import load_folder, simulated_dataset
from deepspm_bluesky.ml.data import _draw_tip, imaging_bad_states


@pytest.fixture(scope="module")
def small_set():
    return simulated_dataset(40, seed=11)


def test_simulated_sets_are_half_good_and_share_the_rest_between_bad_states(small_set):
    counts = Counter(small_set.states.tolist())
    assert counts["good"] == 20
    assert sorted(counts) == sorted(("good", *imaging_bad_states()))
    assert max(counts[s] for s in imaging_bad_states()) - min(
        counts[s] for s in imaging_bad_states()) <= 1


def test_labels_say_good_exactly_for_good_tips(small_set):
    np.testing.assert_array_equal(small_set.labels == 1, small_set.states == "good")


def test_simulated_images_are_normalised_network_input(small_set):
    assert small_set.images.shape == (40, 64, 64)
    assert small_set.images.dtype == np.float32
    assert np.abs(small_set.images).max() <= 1.5


def test_crashed_and_out_of_contact_tips_are_left_to_the_fast_checks():
    assert not {"crashed", "no_contact", "good"} & set(imaging_bad_states())


def test_the_same_seed_gives_the_same_set(small_set):
    again = simulated_dataset(40, seed=11)
    np.testing.assert_array_equal(again.images, small_set.images)
    np.testing.assert_array_equal(again.states, small_set.states)


def test_another_seed_gives_other_images(small_set):
    other = simulated_dataset(40, seed=12)
    assert not np.array_equal(other.images, small_set.images)


@pytest.mark.parametrize("state", ["double", "blunt", "unstable", "contaminated"])
def test_subtle_tips_stay_in_their_bad_state(state):
    rng = np.random.default_rng(0)
    tips = [_draw_tip(rng, state, subtle=True) for _ in range(20)]
    assert all(tip.state == state for tip in tips)


def test_a_subtle_double_tip_has_one_weak_second_apex():
    tip = _draw_tip(np.random.default_rng(1), "double", subtle=True)
    assert len(tip.apexes) == 2
    assert 0.5 * sim.tip.GHOST_VISIBLE_M <= tip.apexes[1, 2] < sim.tip.GHOST_VISIBLE_M


def test_a_folder_of_good_and_bad_images_loads_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("good", 2), ("bad", 3)):
        (tmp_path / name).mkdir()
        for i in range(n):
            np.save(tmp_path / name / f"{i}.npy", rng.normal(0, 1e-11, (64, 64)))
    np.save(tmp_path / "bad" / "stack.npy", rng.normal(0, 1e-11, (4, 64, 64)))
    data = load_folder(tmp_path)
    assert len(data) == 9
    assert data.labels.sum() == 2
    assert Counter(data.states.tolist()) == {"good": 2, "bad": 7}


def test_a_real_nanonis_file_in_a_labelled_folder_loads_as_one_network_input(tmp_path):
    sxm = nanonis_stm_sxm()
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / sxm.name).symlink_to(sxm)
    np.save(tmp_path / "good" / "sim.npy", sim.SimulatedMicroscope(seed=1).scan(0, 0, 1e-8, 64))
    data = load_folder(tmp_path)
    assert len(data) == 2 and data.labels.tolist() == [1.0, 1.0]
    assert data.images.shape == (2, 64, 64) and np.isfinite(data.images).all()


def test_a_folder_without_good_or_bad_subfolders_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a good/ nor a bad/"):
        load_folder(tmp_path)


def test_a_file_of_the_wrong_shape_is_named_in_the_error(tmp_path):
    (tmp_path / "good").mkdir()
    np.save(tmp_path / "good" / "small.npy", np.zeros((32, 32)))
    with pytest.raises(ValueError, match="small.npy"):
        load_folder(tmp_path)


def test_only_bad_tips_are_marked_subtle_and_grouped_apart(small_set):
    assert not small_set.subtle[small_set.states == "good"].any()
    assert small_set.subtle.any()
    groups = small_set.groups[small_set.subtle]
    assert all(group.endswith(" (subtle)") for group in groups)


def test_subsets_and_splits_keep_the_subtle_flags(small_set):
    train, test = small_set.split(0.25, seed=0)
    assert (len(train), len(test)) == (30, 10)
    assert train.subtle.sum() + test.subtle.sum() == small_set.subtle.sum()


def test_a_split_of_a_few_labelled_images_keeps_both_labels_on_each_side(small_set):
    few = small_set.subset(np.concatenate([np.flatnonzero(small_set.labels == 1)[:5],
                                           np.flatnonzero(small_set.labels == 0)[:5]]))
    for seed in range(5):
        rest, test = few.split(0.15, seed=seed)
        assert len(rest) + len(test) == 10
        assert set(test.labels) == set(rest.labels) == {0.0, 1.0}


def test_a_saved_set_loads_back_field_by_field(small_set, tmp_path):
    again = type(small_set).load(small_set.save(tmp_path / "set.npz"))
    for field in ("images", "labels", "states", "subtle", "families"):
        np.testing.assert_array_equal(getattr(again, field), getattr(small_set, field))


def test_a_file_that_is_not_a_saved_set_is_named_in_the_error(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((2, 64, 64)))
    with pytest.raises(ValueError, match="other.npz: not a saved set"):
        type(simulated_dataset(2, seed=0)).load(path)
