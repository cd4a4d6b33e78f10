"""Known answers for the per-image pipeline: plane, normalisation, checks, free square."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from deepspm_bluesky import imaging
from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.imaging import (
    check_contact,
    check_crash,
    check_debris,
    check_image,
    fit_plane,
    flatten_plane,
    free_square,
    largest_free_square,
    normalize,
    process_image,
    square_sizes,
)

Z_RANGE_M = 1e-6


def _load_reference():
    """The faithful DeepSPM re-implementation, which lives with the benchmarks."""
    path = Path(__file__).parents[1] / "benchmarks" / "reference_pipeline.py"
    spec = importlib.util.spec_from_file_location("reference_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def tilted_plane(shape=(64, 64), *, row_slope=3e-12, col_slope=-2e-12, offset=1e-8):
    rows, cols = np.indices(shape)
    return offset + row_slope * rows + col_slope * cols


def adsorbates(shape, fraction, seed):
    """Flat-topped discs 100-300 pm high covering `fraction` of the pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    heights = np.zeros(shape)
    while np.count_nonzero(heights) < fraction * heights.size:
        r, c = rng.integers(0, shape[0], 2)
        radius = rng.integers(2, 6)
        heights[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = rng.uniform(1e-10, 3e-10)
    return heights


# -- plane -------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.45])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flattening_removes_a_plane_to_1e12_m_around_adsorbates(fraction, seed):
    features = adsorbates((64, 64), fraction, seed)
    flattened = flatten_plane(tilted_plane() + features)
    assert_allclose(flattened, features, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(128, 128), (256, 200)])
def test_flattening_a_large_image_also_removes_the_plane_to_1e12_m(shape):
    features = adsorbates(shape, 0.3, 7)
    flattened = flatten_plane(tilted_plane(shape, row_slope=-1e-12, col_slope=4e-12) + features)
    assert_allclose(flattened, features, rtol=0, atol=1e-12)


@pytest.mark.parametrize("slopes", [(0.0, 0.0), (3e-11, 0.0), (-2e-11, 1.5e-11), (1e-10, -3e-10)])
def test_flattening_keeps_the_larger_terrace_of_a_step_at_zero(slopes):
    shape = (64, 64)
    step = np.zeros(shape)
    step[:, 40:] = 2.04e-10  # a monatomic step; 40 of 64 columns on the lower terrace
    flattened = flatten_plane(tilted_plane(shape, row_slope=slopes[0], col_slope=slopes[1])
                              + step)
    assert_allclose(flattened, step, rtol=0, atol=1e-12)


def test_plane_fit_reports_its_coefficients_at_the_image_centre():
    plane = fit_plane(tilted_plane((32, 48), row_slope=4e-12, col_slope=-1e-12, offset=2e-9))
    centre = 2e-9 + 4e-12 * 15.5 - 1e-12 * 23.5
    assert_allclose([plane.offset_m, plane.slope_row_m, plane.slope_col_m],
                    [centre, 4e-12, -1e-12], rtol=1e-9, atol=1e-20)
    assert plane.inliers == 32 * 48


def test_plane_fit_of_a_noisy_plane_finds_the_slopes_to_a_tenth_of_a_pm_per_pixel():
    rng = np.random.default_rng(3)
    image = tilted_plane() + adsorbates((64, 64), 0.3, 3) + rng.normal(0, 2e-12, (64, 64))
    plane = fit_plane(image)
    assert_allclose([plane.slope_row_m, plane.slope_col_m], [3e-12, -2e-12], atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1])
def test_flattening_agrees_with_the_reference_ransac_on_a_noisy_plane_with_adsorbates(seed):
    rng = np.random.default_rng(seed)
    image = (tilted_plane() + adsorbates((64, 64), 0.3, seed)
             + rng.normal(0, 2e-12, (64, 64)))
    ours = flatten_plane(image)
    theirs = image - reference.ransac_plane(image, seed=seed)[0]
    assert np.abs(ours - theirs).max() < 2e-12
    consensus = [np.count_nonzero(np.abs(f) <= reference.RESIDUAL_THRESHOLD_M)
                 for f in (ours, theirs)]
    assert consensus[0] >= 0.98 * consensus[1]


def test_flattening_a_float32_image_returns_float64():
    flattened = flatten_plane(tilted_plane().astype(np.float32))
    assert flattened.dtype == np.float64
    assert np.abs(flattened).max() < 1e-14


# -- normalisation -----------------------------------------------------------------------
@pytest.mark.parametrize("height_m, expected", [
    (0.0, -1.0), (5e-11, -0.5), (1e-10, 0.0), (2e-10, 1.0), (1e-9, 1.5), (-1e-9, -1.5),
])
def test_normalisation_maps_heights_as_deepspm(height_m, expected):
    assert_allclose(normalize(np.full((2, 2), height_m)), expected, atol=1e-12)


# -- checks ------------------------------------------------------------------------------
def test_a_flat_image_with_positive_mean_is_a_crash_with_zero_range():
    check = check_image(np.full((64, 64), 4e-7), z_range_m=Z_RANGE_M)
    assert check.verdict == "crash"
    assert check.fired == check_crash(np.full((64, 64), 4e-7))
    assert check.height_range_m == 0.0
    assert check.mean_m == pytest.approx(4e-7)


@pytest.mark.parametrize("offset_m", [0.0, 2.9e-10, -2.9e-10])
def test_an_image_at_the_out_of_contact_reading_has_no_contact(offset_m):
    image = np.full((64, 64), -Z_RANGE_M / 2 + offset_m)
    image[0, 0] += 1e-12  # not perfectly flat, and the mean is negative anyway
    check = check_image(image, z_range_m=Z_RANGE_M)
    assert check.verdict == "no_contact"
    assert check.contact_distance_m == pytest.approx(abs(offset_m), abs=1e-12)


def test_an_image_310_pm_from_the_out_of_contact_reading_is_in_contact():
    result = check_contact(np.full((8, 8), -Z_RANGE_M / 2 + 3.1e-10), z_range_m=Z_RANGE_M)
    assert not result.fired
    assert result.value_m == pytest.approx(3.1e-10)
    assert result.limit_m == 3e-10


def test_a_700_pm_cluster_is_debris_and_its_range_is_reported():
    image = tilted_plane()
    image[10:20, 10:20] += 7e-10
    check = check_image(image, z_range_m=Z_RANGE_M)
    assert check.verdict == "debris"
    assert check.flat_range_m == pytest.approx(7e-10, abs=1e-12)
    assert check.fired.limit_m == 6e-10


def test_a_steep_tilt_alone_is_not_debris():
    image = tilted_plane(row_slope=5e-12, col_slope=5e-12)  # 630 pm across the frame
    check = check_image(image, z_range_m=Z_RANGE_M)
    assert check.height_range_m > 6e-10
    assert check.verdict == "ok"
    assert check.ok and check.fired is None


def test_check_debris_fires_at_600_pm_exactly():
    flattened = np.zeros((4, 4))
    flattened[0, 0] = 6e-10
    assert check_debris(flattened).fired


def test_every_check_reports_its_number_in_order():
    check = check_image(tilted_plane(), z_range_m=Z_RANGE_M)
    assert [c.name for c in check.checks] == ["crash", "no_contact", "debris"]
    assert_allclose([c.value_m for c in check.checks],
                    [check.height_range_m, check.contact_distance_m, check.flat_range_m])


# -- free square -------------------------------------------------------------------------
@pytest.mark.parametrize("top, left, side", [(0, 0, 10), (20, 30, 17), (50, 50, 14), (0, 40, 24)])
def test_a_cleared_square_is_found_with_its_centre_and_side(top, left, side):
    normalized = np.full((64, 64), 0.5)
    normalized[top:top + side, left:left + side] = -1.0
    row, col, size = largest_free_square(normalized)
    assert (row, col, size) == (top + (side - 1) / 2, left + (side - 1) / 2, side)


def test_pixels_within_the_tolerance_count_as_free():
    normalized = np.full((16, 16), -1.0)
    normalized[:, 8:] = -1.0 + 0.1  # 10 pm above the plane: still free
    normalized[:, 12:] = -1.0 + 0.11
    assert largest_free_square(normalized)[2] == 12


def test_an_image_without_free_pixels_has_a_square_of_side_zero_at_its_centre():
    assert largest_free_square(np.zeros((9, 9))) == (4.0, 4.0, 0)


@pytest.mark.parametrize("seed, shape", [(0, (1, 1)), (1, (1, 17)), (2, (9, 1)), (3, (12, 29)),
                                         (4, (30, 30)), (5, (25, 8)), (6, (150, 140))])
def test_square_sizes_match_the_pixel_loop_dynamic_programme(seed, shape):
    rng = np.random.default_rng(seed)
    free = rng.random(shape) > rng.uniform(0.05, 0.5)
    sizes = square_sizes(free)
    best, row, col = reference.max_empty_size(np.where(free, 0.0, 1.0))
    assert sizes.max() == best
    assert np.unravel_index(np.argmax(sizes), shape) == (row, col)


@pytest.mark.parametrize("seed", range(4))
def test_a_one_pixel_border_reproduces_deepspms_empty_spot_finder(seed):
    rng = np.random.default_rng(seed)
    normalized = np.where(rng.random((32, 32)) < 0.1, 0.5, -1.0)
    row, col, side = largest_free_square(normalized, border_px=1)
    ref_row, ref_col, ref_side = reference.find_empty_spot(normalized)
    assert side == ref_side
    assert (row + 0.5, col + 0.5) == (ref_row, ref_col)  # corner- vs pixel-centred


def test_the_free_square_in_nm_is_measured_from_the_frame_centre():
    normalized = np.full((64, 64), 0.5)
    normalized[:32, 32:] = -1.0  # the quadrant of small rows (y) and large columns (x)
    square = free_square(normalized, size_nm=10.0)
    assert square.size_px == 32
    assert_allclose([square.size_nm, square.x_nm, square.y_nm], [5.0, 2.5, -2.5])


@pytest.mark.parametrize("free_nm, expected", [
    (0.0, ["stall", "pulse +2.5 V", "pulse +4 V", "pulse -2.5 V", "pulse -4 V", "pulse -8 V"]),
    (2.0, ["dip -0.8 nm", "dip -1.0 nm", "dip -1.2 nm", "dip -1.8 nm"]),
    (100.0, ["pulse +8 V", "dip -2.5 nm", "dip -5.0 nm", "stall for measurement"]),
])
def test_allowed_actions_are_those_whose_required_free_side_fits(free_nm, expected):
    table = load_actions()
    allowed = imaging.allowed_actions(free_nm)
    need = np.array([a.require_free_nm for a in table])
    assert_array_equal(allowed, need <= free_nm)
    for name in expected:
        assert allowed[table.index(name)], name


# -- pipeline ----------------------------------------------------------------------------
def test_process_image_gives_the_same_answers_as_the_separate_functions():
    image = tilted_plane() + adsorbates((64, 64), 0.3, 5)
    result = process_image(image, size_nm=10.0, z_range_m=Z_RANGE_M)
    assert_allclose(result.flattened, flatten_plane(image), atol=1e-20)
    assert_allclose(result.normalized, normalize(flatten_plane(image)))
    assert result.check == check_image(image, z_range_m=Z_RANGE_M)
    assert (result.square.row, result.square.col, result.square.size_px) == \
        largest_free_square(result.normalized)
    assert_array_equal(result.allowed, load_actions().allowed(result.square.size_nm))


def test_process_image_of_a_simulated_scan_is_consistent():
    from deepspm_bluesky.sim import SimulatedMicroscope

    image = SimulatedMicroscope(seed=4).scan(0.0, 0.0, 10e-9, 64)
    result = process_image(image, size_nm=10.0, z_range_m=Z_RANGE_M)
    assert result.check.verdict in imaging.VERDICTS
    assert result.square.size_nm == pytest.approx(result.square.size_px * 10.0 / 64)
    assert result.plane.inliers > 0.1 * image.size


# -- bad input ---------------------------------------------------------------------------
def _with(value):
    image = np.zeros((8, 8))
    image[3, 4] = value
    return image


BAD_IMAGES = [
    pytest.param(_with(np.nan), "NaN/inf", id="nan"),
    pytest.param(_with(np.inf), "NaN/inf", id="inf"),
    pytest.param(np.zeros(8), "2-D", id="1-d"),
    pytest.param(np.zeros((2, 8, 8)), "2-D", id="3-d"),
    pytest.param(np.zeros((0, 0)), "empty", id="empty"),
    pytest.param(np.zeros((0, 8)), "empty", id="no-rows"),
    pytest.param(np.zeros((8, 8), complex), "real numbers", id="complex"),
    pytest.param([["a"]], "real numbers", id="text"),
]


@pytest.mark.parametrize("image, message", BAD_IMAGES)
@pytest.mark.parametrize("function", [
    flatten_plane, fit_plane, normalize, largest_free_square, check_crash, check_debris,
    lambda image: check_image(image, z_range_m=Z_RANGE_M),
    lambda image: process_image(image, size_nm=10.0, z_range_m=Z_RANGE_M),
])
def test_bad_images_raise_a_value_error_naming_the_problem(function, image, message):
    with pytest.raises(ValueError, match=message):
        function(image)


def test_a_single_row_is_too_small_for_a_plane():
    with pytest.raises(ValueError, match="at least 2 x 2"):
        flatten_plane(np.zeros((1, 8)))


@pytest.mark.parametrize("kwargs, message", [
    ({"size_nm": 0.0}, "size_nm"), ({"size_nm": np.nan}, "size_nm"),
    ({"size_nm": 10.0, "tolerance": -0.1}, "tolerance"),
    ({"size_nm": 10.0, "border_px": -1}, "border_px"),
    ({"size_nm": 10.0, "border_px": 1.5}, "border_px"),
])
def test_bad_options_of_the_free_square_raise_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        free_square(np.full((8, 8), -1.0), **kwargs)


def test_a_non_positive_z_range_raises_a_value_error():
    with pytest.raises(ValueError, match="z_range_m"):
        check_image(tilted_plane(), z_range_m=0.0)
