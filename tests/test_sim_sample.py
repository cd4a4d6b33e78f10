"""The procedural sample: analytic Gaussians, Ag(100) steps, four-lobed molecules, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.sim import Sample
from deepspm_bluesky.sim.sample import (
    LOBE_DISTANCE_M,
    LOBE_HEIGHT_M,
    STEP_HEIGHT_M,
    Gaussians,
    Molecules,
    Steps,
    gaussian_image,
)

GRID = np.linspace(-5e-9, 5e-9, 101)


def one_step() -> Steps:
    """A straight edge along y through x = 0, upper terrace at x > 0."""
    return Steps(normals=np.array([[1.0, 0.0]]), offsets_m=np.zeros(1), signs=np.ones(1),
                 meander_m=np.zeros(1), wavenumber=np.ones(1), phase=np.zeros(1))


def test_gaussian_image_is_the_sum_of_the_gaussians():
    xy, h, s = np.array([[1e-9, -2e-9], [0.0, 0.5e-9]]), np.array([1e-10, -3e-11]), \
        np.array([0.4e-9, 1e-9])
    X, Y = np.meshgrid(GRID, GRID)
    expected = sum(hi * np.exp(-((X - x) ** 2 + (Y - y) ** 2) / (2 * si**2))
                   for (x, y), hi, si in zip(xy, h, s, strict=True))
    np.testing.assert_allclose(gaussian_image(xy, h, s, GRID, GRID), expected, atol=1e-20)


def test_a_blunt_tip_spreads_a_bump_keeping_the_area_of_its_profile():
    args = (np.zeros((1, 2)), np.array([1e-10]), np.array([0.3e-9]), GRID, GRID)
    sharp, blunt = gaussian_image(*args), gaussian_image(*args, blur_m=0.6e-9)
    assert blunt.max() == pytest.approx(sharp.max() * 0.3 / np.hypot(0.3, 0.6), rel=1e-9, abs=0)
    assert blunt[50].sum() == pytest.approx(sharp[50].sum(), rel=1e-6, abs=0)


def test_a_step_is_one_monatomic_height_of_ag100():
    heights = one_step().image(GRID, GRID)
    step = heights[:, -1].mean() - heights[:, 0].mean()
    assert step == pytest.approx(STEP_HEIGHT_M, rel=1e-6, abs=0)


def test_a_step_far_from_the_frame_adds_a_constant_terrace_level():
    far = np.linspace(20e-9, 30e-9, 11)
    heights = one_step().image(far, GRID)
    np.testing.assert_allclose(heights, STEP_HEIGHT_M / 2)


def test_a_molecule_has_four_lobes_around_a_dimmer_centre():
    molecule = Molecules(np.zeros((1, 2)), np.zeros(1))
    xy, h, s = molecule.bumps(-5e-9, 5e-9, -5e-9, 5e-9, pixel_m=1e-10)
    heights = gaussian_image(xy, h, s, GRID, GRID)
    at = {  # (row, col) of the grid point nearest to (x, y)
        name: tuple(np.abs(GRID - v).argmin() for v in (y, x))
        for name, (x, y) in {"centre": (0, 0), "east": (LOBE_DISTANCE_M, 0),
                             "north": (0, LOBE_DISTANCE_M), "diagonal": (0.4e-9, 0.4e-9)}.items()
    }
    assert heights[at["east"]] == pytest.approx(heights[at["north"]], rel=1e-6, abs=0)
    assert heights[at["east"]] > 1.3 * heights[at["centre"]]
    assert heights[at["east"]] > 1.3 * heights[at["diagonal"]]


@pytest.mark.parametrize(("pixel_m", "blur_m"), [(1e-9, 0.0), (1e-10, 0.5e-9)])
def test_coarse_pixels_or_a_blunt_tip_draw_a_molecule_as_one_round_blob(pixel_m, blur_m):
    molecule = Molecules(np.zeros((1, 2)), np.zeros(1))
    xy, height, sigma = molecule.bumps(-1, 1, -1, 1, pixel_m=pixel_m, blur_m=blur_m)
    assert len(height) == 1
    assert 0.5 * LOBE_HEIGHT_M < height[0] <= LOBE_HEIGHT_M


def test_a_bright_centre_is_drawn_only_when_asked_for():
    molecule = Molecules(np.zeros((1, 2)), np.zeros(1))
    plain = molecule.bumps(-1, 1, -1, 1, pixel_m=1e-10)[1]
    bright = molecule.bumps(-1, 1, -1, 1, pixel_m=1e-10, centre_gain=4.0)[1]
    np.testing.assert_array_equal(bright[:4], plain[:4])
    assert bright[4] == pytest.approx(4 * plain[4], rel=1e-12, abs=0)


@pytest.mark.parametrize("seed", range(3))
def test_the_relief_bound_is_never_below_the_relief(seed):
    rng = np.random.default_rng(seed)
    sample = Sample.random(rng, 850e-9)
    for x, y in rng.uniform(-400e-9, 400e-9, (40, 2)):
        gx, gy = x + GRID, y + GRID
        relief = np.ptp(sample.heights(gx, gy))
        assert relief <= sample.relief_bound_m(gx[0], gx[-1], gy[0], gy[-1])


def test_the_same_generator_state_gives_the_same_sample():
    a, b = (Sample.random(np.random.default_rng(3), 850e-9) for _ in range(2))
    np.testing.assert_array_equal(a.heights(GRID, GRID), b.heights(GRID, GRID))


def test_an_area_holds_molecules_clusters_and_step_edges_somewhere():
    sample = Sample.random(np.random.default_rng(0), 850e-9)
    assert len(sample.molecules.xy) > 10_000
    assert len(sample.debris.height) > 0
    overview = np.linspace(-425e-9, 425e-9, 64)
    assert np.ptp(sample.heights(overview, overview)) > 2 * STEP_HEIGHT_M


def test_a_dip_mark_is_a_crater_with_a_rim_taller_than_the_debris_limit():
    sample = Sample.random(np.random.default_rng(0), 850e-9)
    marks = Gaussians()
    sample.debris = marks
    sample.add_dip_mark(np.random.default_rng(1), 0.0, 0.0, -0.8e-9)
    assert marks.height.min() < 0 < marks.height.max()
    heights = gaussian_image(marks.xy, marks.height, marks.sigma, GRID, GRID)
    assert np.ptp(heights) >= 6e-10


def test_the_bumps_near_a_box_are_exactly_those_whose_4_sigma_disc_reaches_it():
    rng = np.random.default_rng(7)
    bumps = Gaussians(rng.uniform(-400e-9, 400e-9, (3000, 2)), rng.uniform(0, 1e-9, 3000),
                      rng.uniform(0.2e-9, 8e-9, 3000))
    for _ in range(50):
        x0, y0 = rng.uniform(-450e-9, 400e-9, 2)
        x1, y1 = x0 + rng.uniform(1e-9, 60e-9), y0 + rng.uniform(1e-9, 60e-9)
        m = 4 * bumps.sigma
        x, y = bumps.xy.T
        brute = np.flatnonzero((x + m > x0) & (x - m < x1) & (y + m > y0) & (y - m < y1))
        np.testing.assert_array_equal(bumps.near(x0, x1, y0, y1), brute)
