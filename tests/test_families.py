"""The broad simulator: every surface family images, through the same tip model, at any
frame size and both polarities, reproducibly; the default sample is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.imaging import check_image
from deepspm_bluesky.sim import SimulatedMicroscope, random_tip
from deepspm_bluesky.sim.families import (
    DEFAULT_FAMILY,
    FAMILIES,
    FRAME_NM,
    RANDOMISED,
    make_sample,
)
from deepspm_bluesky.sim.sample import Sample

NEW_FAMILIES = [f for f in FAMILIES if f != DEFAULT_FAMILY] + list(RANDOMISED)


def _scan(family, *, seed=0, state="good", size_m=10e-9, pixels=64, bias_v=1.0, tip_seed=3):
    microscope = SimulatedMicroscope(seed=seed, family=family)
    microscope.tip = random_tip(np.random.default_rng(tip_seed), state)
    microscope.set_bias(bias_v)
    return microscope.scan(0.0, 0.0, size_m, pixels)


def test_the_default_family_draws_exactly_the_default_sample():
    a = make_sample(DEFAULT_FAMILY, np.random.default_rng(5), 850e-9)
    b = Sample.random(np.random.default_rng(5), 850e-9)
    gx = np.linspace(-5e-9, 5e-9, 32)
    np.testing.assert_array_equal(a.heights(gx, gx), b.heights(gx, gx))


def test_a_microscope_without_a_family_images_as_before_the_families_existed():
    plain = SimulatedMicroscope(seed=4).scan(1e-8, 2e-8, 10e-9, 32)
    default = SimulatedMicroscope(seed=4, family=None, artifacts=None).scan(1e-8, 2e-8, 10e-9, 32)
    np.testing.assert_array_equal(plain, default)
    assert SimulatedMicroscope(seed=4).surface_family == DEFAULT_FAMILY


@pytest.mark.parametrize("family", [*FAMILIES, *RANDOMISED])
def test_every_family_is_reproducible_from_its_seed(family):
    np.testing.assert_array_equal(_scan(family, seed=2), _scan(family, seed=2))
    assert not np.array_equal(_scan(family, seed=2), _scan(family, seed=3))


@pytest.mark.parametrize("family", NEW_FAMILIES)
@pytest.mark.parametrize("size_m, pixels", [(2e-9, 64), (100e-9, 64), (20e-9, 512)])
def test_every_family_images_frames_from_2_to_100_nm_and_64_to_512_px(family, size_m, pixels):
    image = _scan(family, size_m=size_m, pixels=pixels)
    assert image.shape == (pixels, pixels)
    assert np.all(np.isfinite(image))
    assert np.ptp(image) > 1e-11


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_a_blunt_tip_smooths_every_family(family):
    """The same frame (same noise) through a sharp and a blunt tip: less fine detail."""
    from scipy.ndimage import gaussian_filter

    def detail(image):
        image = image.astype(float)
        return np.var(image - gaussian_filter(image, 2.0))

    sharp = random_tip(np.random.default_rng(0), "good").evolve(blur_m=0.05e-9)
    images = []
    for tip in (sharp, sharp.evolve(blur_m=1.0e-9)):
        m = SimulatedMicroscope(seed=1, family=family, artifacts=0.0)
        m.tip = tip
        images.append(m.scan(0.0, 0.0, FRAME_NM[family][0] * 1e-9, 128))
    assert detail(images[1]) < detail(images[0])


@pytest.mark.parametrize("family", ["au111", "graphite", "si111_7x7", "molecular_islands",
                                    "lattice"])
def test_an_inverting_contaminated_tip_changes_every_family_it_images(family):
    good = random_tip(np.random.default_rng(0), "good").evolve(contrast=0.0)
    images = []
    for tip in (good, good.evolve(contrast=-1.8)):
        m = SimulatedMicroscope(seed=1, family=family, artifacts=0.0)
        m.tip = tip
        images.append(m.scan(0.0, 0.0, 4e-9, 64).astype(float))  # atoms resolved
    change = np.abs((images[0] - images[0].mean()) - (images[1] - images[1].mean()))
    assert change.max() > 20e-12


def test_si111_7x7_images_the_two_polarities_differently():
    positive, negative = (_scan("si111_7x7", size_m=8e-9, bias_v=v) for v in (1.5, -1.5))
    assert np.abs(positive - negative).max() > 5e-12


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_most_10_nm_frames_of_every_family_pass_the_fast_checks(family):
    microscope = SimulatedMicroscope(seed=0, family=family)
    rng = np.random.default_rng(0)
    passed = [check_image(microscope.scan(*rng.uniform(-4e-7, 4e-7, 2), 10e-9, 64),
                          z_range_m=1e-6).ok for _ in range(30)]
    assert np.mean(passed) >= 0.5


def test_a_random_family_draws_several_families_over_approach_areas():
    microscope = SimulatedMicroscope(seed=0, family="random")
    seen = set()
    for _ in range(12):
        seen.add(microscope.surface_family)
        microscope.move_area()
    assert len(seen) >= 4


def test_an_unknown_family_is_a_value_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="unknown surface family 'mica'.*graphite"):
        SimulatedMicroscope(family="mica")


@pytest.mark.parametrize("blur_m", [0.0, 0.3e-9, 1e-9])
def test_a_periodic_sum_of_gaussians_equals_its_fourier_series(blur_m):
    from deepspm_bluesky.sim.families import (
        _hex_vectors,
        _lattice_grid,
        _periodic_gaussians,
    )
    from deepspm_bluesky.sim.sample import gaussian_image

    vectors = _hex_vectors(2.69e-9, 0.3)
    basis = np.array([[0.3e-9, 0.2e-9], [1.0e-9, 0.5e-9]])
    heights, sigmas = np.array([80e-12, -100e-12]), np.array([0.22e-9, 0.35e-9])
    grid = np.linspace(-5e-9, 5e-9, 64)
    _, _, x, y, inside = _lattice_grid(vectors, (grid[0], grid[-1], grid[0], grid[-1]), 6e-9)
    cells = np.stack([x[inside], y[inside]], axis=1)
    explicit = gaussian_image((cells[:, None, :] + basis[None]).reshape(-1, 2),
                              np.tile(heights, len(cells)), np.tile(sigmas, len(cells)),
                              grid, grid, blur_m)
    series = _periodic_gaussians(grid, grid, vectors, basis, heights, sigmas, blur_m)
    np.testing.assert_allclose(series, explicit, atol=5e-13)  # 0.5 pm of truncation


def test_a_contaminated_apex_switches_contrast_in_bands_of_lines_a_clean_one_never():
    from deepspm_bluesky.sim.render import hopping_rows

    assert hopping_rows(np.random.default_rng(0), 0.1, 64) is None  # a good tip's |contrast|
    good = random_tip(np.random.default_rng(0), "good").evolve(contrast=0.0)
    for family in ("graphite", "si111_7x7"):
        images = {}
        for name, contrast, hopping in (("hops", -1.8, True), ("stays", -1.8, False),
                                        ("clean", 0.0, False)):
            m = SimulatedMicroscope(seed=1, family=family, artifacts=0.0)
            m.tip, m.hopping = good.evolve(contrast=contrast), hopping
            images[name] = m.scan(0.0, 0.0, 4e-9, 64).astype(float)
        to_stays, to_clean = (np.sqrt(np.mean((images["hops"] - images[k]) ** 2, axis=1))
                              for k in ("stays", "clean"))
        assert np.any(to_clean < to_stays / 2) and np.any(to_stays < to_clean / 2), family


def test_the_made_up_lattices_differ_from_area_to_area():
    """`lattice` is a random crystal per approach area: cells and atoms of many kinds."""
    cells = {round(make_sample("lattice", np.random.default_rng(s), 850e-9).texture.a_m, 12)
             for s in range(8)}
    assert len(cells) == 8
    atoms = {len(make_sample("lattice", np.random.default_rng(s), 850e-9).texture.extra[
        "heights"]) for s in range(30)}
    assert len(atoms) >= 4
