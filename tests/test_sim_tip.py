"""Each tip state shapes the image the way DeepSPM's reference describes; states compose."""

from __future__ import annotations

import numpy as np
import pytest

from deepspm_bluesky.sim import STATES, SimulatedMicroscope, Tip, random_tip
from deepspm_bluesky.sim.microscope import Z_RANGE_M
from deepspm_bluesky.sim.tip import BAD_STATES, cleaned, degraded, perturbed

FRAME = (0.0, 0.0, 20e-9, 64)
PIXEL_M = FRAME[2] / FRAME[3]
GHOST = np.array([3e-9, -2e-9, 0.2e-10])


def plane_removed(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    design = np.stack([rows.ravel(), cols.ravel(), np.ones(image.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, image.ravel().astype(float), rcond=None)
    return image - (design @ coef).reshape(image.shape)


def autocorrelation(image: np.ndarray) -> np.ndarray:
    """Linear (zero-padded) autocorrelation, zero lag at the centre, normalised to 1 there."""
    z = plane_removed(image)
    z -= z.mean()
    n = z.shape[0]
    power = np.abs(np.fft.fft2(z, s=(2 * n, 2 * n))) ** 2
    ac = np.fft.fftshift(np.fft.ifft2(power).real)[n // 2:3 * n // 2, n // 2:3 * n // 2]
    return ac / ac.max()


def image_with(tip: Tip, seed: int = 0) -> np.ndarray:
    microscope = SimulatedMicroscope(seed=seed)
    microscope.tip = tip
    return microscope.scan(*FRAME)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("seed", range(5))
def test_random_tip_is_in_the_state_it_was_drawn_for(state, seed):
    assert random_tip(np.random.default_rng(seed), state).state == state


def test_an_unknown_state_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known"):
        random_tip(np.random.default_rng(0), "sticky")


def test_defects_compose_and_state_names_the_dominant_one():
    tip = Tip(apexes=np.vstack([np.zeros(3), GHOST]), blur_m=1e-9, contrast=-1.5)
    assert tip.defects == ("double", "blunt", "contaminated")
    assert tip.state == "double"
    assert not tip.is_good


def test_evolve_recentres_the_apex_on_the_lowest_protrusion():
    tip = Tip().evolve(apexes=np.array([[1e-9, 0, 2e-10], [0.5e-9, 0, 0]]))
    np.testing.assert_allclose(tip.apexes, [[0, 0, 0], [0.5e-9, 0, 2e-10]])


@pytest.mark.parametrize("seed", range(6))
def test_double_tip_autocorrelation_shows_a_second_peak_at_the_ghost_offset(seed):
    double = Tip(apexes=np.vstack([np.zeros(3), GHOST]))
    ac = autocorrelation(image_with(double, seed))
    lag = np.indices(ac.shape) - ac.shape[0] // 2
    outside_centre = np.hypot(*lag) * PIXEL_M > 1.5e-9
    peak = np.unravel_index(np.argmax(np.where(outside_centre, ac, -1)), ac.shape)
    offset_m = np.array([lag[1][peak], lag[0][peak]]) * PIXEL_M
    assert min(np.abs(offset_m - GHOST[:2]).max(), np.abs(offset_m + GHOST[:2]).max()) \
        <= 1.5 * PIXEL_M


def test_good_tip_autocorrelation_is_lower_at_that_offset():
    double = Tip(apexes=np.vstack([np.zeros(3), GHOST]))
    col, row = np.round(GHOST[:2] / PIXEL_M).astype(int) + 32
    good = np.mean([autocorrelation(image_with(Tip(), seed))[row, col] for seed in range(6)])
    ghost = np.mean([autocorrelation(image_with(double, seed))[row, col] for seed in range(6)])
    assert good < 0.5 * ghost


def test_blunt_tip_widens_the_autocorrelation_peak():
    good, blunt = autocorrelation(image_with(Tip())), autocorrelation(image_with(Tip(blur_m=1e-9)))
    lag_px = 3
    assert blunt[32, 32 + lag_px] > good[32, 32 + lag_px] + 0.2


def test_unstable_tip_jumps_between_lines():
    row_steps = [np.abs(np.diff(np.median(plane_removed(image_with(tip, seed)), axis=1))).max()
                 for seed in range(3) for tip in (Tip(), Tip(instability=0.2))]
    good, unstable = row_steps[0::2], row_steps[1::2]
    assert max(good) < 25e-12
    assert min(unstable) > 50e-12


def test_contaminated_tip_can_invert_the_molecules():
    def skew(image):
        z = plane_removed(image)
        return np.mean((z - z.mean()) ** 3) / z.std() ** 3

    assert skew(image_with(Tip())) > 1
    assert skew(image_with(Tip(contrast=-1.6))) < -0.5


def test_crashed_tip_gives_a_perfectly_flat_image_above_zero():
    image = SimulatedMicroscope(seed=0, tip_state="crashed").scan(*FRAME)
    assert np.ptp(image) < 1e-25
    assert image.mean() > 0


def test_tip_out_of_contact_reads_the_retracted_end_of_the_z_range():
    image = SimulatedMicroscope(seed=0, tip_state="no_contact").scan(*FRAME)
    assert abs(image.mean() + Z_RANGE_M / 2) <= 3e-10
    assert np.ptp(image) < 1e-25


def test_good_tip_image_is_neither_flat_nor_debris_like():
    image = plane_removed(SimulatedMicroscope(seed=0).scan(0.0, 0.0, 10e-9, 64))
    assert 50e-12 < np.ptp(image) < 600e-12


def test_perturbation_of_strength_zero_changes_nothing():
    tip = random_tip(np.random.default_rng(1), "double")
    same = perturbed(tip, np.random.default_rng(2), 0.0)
    np.testing.assert_allclose(same.apexes, tip.apexes)
    assert (same.blur_m, same.contrast, same.instability) == \
        (tip.blur_m, tip.contrast, tip.instability)


def test_cleaning_removes_contamination_and_instability():
    dirty = Tip(contrast=1.0, instability=0.3)
    assert cleaned(dirty, np.random.default_rng(0)).state == "good"


@pytest.mark.parametrize("seed", range(20))
def test_a_spontaneous_change_adds_a_defect_to_a_good_tip(seed):
    rng = np.random.default_rng(seed)
    assert degraded(Tip(), rng).state in BAD_STATES


@pytest.mark.parametrize("seed", range(4))
def test_skipping_far_retracted_protrusions_does_not_change_the_image(seed):
    from deepspm_bluesky.sim.render import topography

    rng = np.random.default_rng(seed)
    microscope = SimulatedMicroscope(seed=seed)
    tip = Tip(apexes=np.array([[0, 0, 0], [1e-9, 2e-9, 4e-10], [-2e-9, 0, 0.3e-10]]))
    for x, y in rng.uniform(-400e-9, 400e-9, (20, 2)):
        g = np.linspace(-5e-9, 5e-9, 32)
        gx, gy = x + g, y + g
        every = np.max([microscope.sample.heights(gx + dx, gy + dy, blur_m=tip.blur_m) - dz
                        for dx, dy, dz in tip.apexes], axis=0)
        np.testing.assert_allclose(topography(microscope.sample, tip, gx, gy), every, atol=1e-20)


def test_tips_compare_equal_by_value():
    assert Tip() == Tip()
    assert Tip() != Tip(blur_m=1e-9)
    assert Tip(apexes=np.vstack([np.zeros(3), GHOST])) != Tip()


@pytest.mark.parametrize("state", BAD_STATES + ("good",))
def test_most_frames_of_an_imaging_tip_stay_below_the_debris_range(state):
    rng = np.random.default_rng(4)
    microscope = SimulatedMicroscope(seed=4)
    below = 0
    for x, y in rng.uniform(-400e-9, 400e-9, (100, 2)):
        microscope.tip = random_tip(rng, state)
        below += np.ptp(plane_removed(microscope.scan(x, y, 10e-9, 64))) < 6e-10
    assert below >= 85
