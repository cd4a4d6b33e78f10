"""The simulated microscope: reproducible, leaves marks where it dips, crashes and loses contact,
ages, drifts and creeps, takes real time only when asked to."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepspm_bluesky.actions import load_actions
from deepspm_bluesky.sim import SimulatedMicroscope, Tip, render
from deepspm_bluesky.sim import microscope as sim_microscope

ACTIONS = load_actions()
FRAME = (0.0, 0.0, 10e-9, 64)
DEBRIS_RANGE_M = 6e-10  # DeepSPM's debris threshold


def plane_removed(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    design = np.stack([rows.ravel(), cols.ravel(), np.ones(image.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, image.ravel().astype(float), rcond=None)
    return image - (design @ coef).reshape(image.shape)


def session(seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Scans and actions in a fixed order; the images and outcomes it produced."""
    microscope = SimulatedMicroscope(seed=seed, tip_state="double")
    images, outcomes = [], []
    for i, name in enumerate(["pulse +4 V", "dip -1.2 nm", "dip -5.0 nm", "pulse -8 V"]):
        images.append(microscope.scan(i * 20e-9, 0.0, 10e-9, 64))
        microscope.condition(ACTIONS.get(name), i * 20e-9, 0.0)
        outcomes.append(microscope.last_outcome)
    images.append(microscope.scan(0.0, 0.0, 30e-9, 64))
    return images, outcomes + [microscope.tip.state]


def test_the_same_seed_gives_the_same_images_and_outcomes():
    (images_a, outcomes_a), (images_b, outcomes_b) = session(5), session(5)
    assert outcomes_a == outcomes_b
    for a, b in zip(images_a, images_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_another_seed_gives_other_images():
    assert not np.array_equal(session(5)[0][0], session(6)[0][0])


def test_a_scan_is_a_float32_square_of_heights_in_metres():
    image = SimulatedMicroscope(seed=0).scan(0.0, 0.0, 10e-9, 32)
    assert image.shape == (32, 32)
    assert image.dtype == np.float32
    assert 1e-7 < abs(float(image.mean())) < 1e-6


@pytest.mark.parametrize(("frame", "message"), [
    ((0.0, 0.0, -1e-9, 64), "positive"),
    ((math.nan, 0.0, 1e-8, 64), "non-finite"),
    ((0.0, 0.0, 1e-8, 1.5), "integer"),
])
def test_a_bad_scan_request_is_refused_with_a_clear_error(frame, message):
    with pytest.raises(ValueError, match=message):
        SimulatedMicroscope(seed=0).scan(*frame)


@pytest.mark.parametrize("dip", ["dip -0.8 nm", "dip -1.8 nm", "dip -5.0 nm"])
def test_debris_appears_where_a_dip_happened(dip):
    microscope = SimulatedMicroscope(seed=2)
    spot, elsewhere = (100e-9, -50e-9), (-100e-9, 50e-9)
    before = [np.ptp(plane_removed(microscope.scan(*p, 10e-9, 64))) for p in (spot, elsewhere)]
    tip = microscope.tip
    microscope.condition(ACTIONS.get(dip), *spot)
    microscope.tip = tip  # look at the sample with the same tip
    after = [np.ptp(plane_removed(microscope.scan(*p, 10e-9, 64))) for p in (spot, elsewhere)]
    assert before[0] < DEBRIS_RANGE_M
    assert after[0] >= DEBRIS_RANGE_M
    assert after[1] == pytest.approx(before[1], abs=50e-12)


def test_a_crash_is_reachable_by_deep_dips_and_gives_a_flat_image():
    microscope = SimulatedMicroscope(seed=4)
    dip = ACTIONS.get("dip -5.0 nm")
    for i in range(300):
        microscope.condition(dip, (i % 20) * 30e-9 - 300e-9, (i // 20) * 30e-9 - 300e-9)
        if microscope.tip.crashed:
            break
    image = microscope.scan(*FRAME)
    assert microscope.tip.state == "crashed"
    assert np.ptp(image) < 1e-25 and image.mean() > 0


def test_lost_contact_is_reachable_by_strong_pulses():
    microscope = SimulatedMicroscope(seed=4)
    pulse = ACTIONS.get("pulse +8 V")
    for _ in range(1000):
        microscope.condition(pulse, 0.0, 0.0)
        if not microscope.tip.in_contact:
            break
    image = microscope.scan(*FRAME)
    assert microscope.tip.state == "no_contact"
    assert abs(image.mean() + microscope.z_range_m() / 2) <= 3e-10


def test_approach_brings_a_retracted_tip_back_into_contact():
    microscope = SimulatedMicroscope(seed=0)
    microscope.withdraw()
    assert microscope.tip.state == "no_contact"
    microscope.approach()
    assert microscope.tip.in_contact and np.ptp(microscope.scan(*FRAME)) > 1e-11


def test_approach_does_not_mend_a_crash_but_tip_clean_does():
    microscope = SimulatedMicroscope(seed=0, tip_state="crashed")
    microscope.approach()
    assert microscope.tip.crashed
    assert microscope.tip_clean(0.0, 0.0) is True
    assert not microscope.tip.crashed and microscope.tip.in_contact


def test_tip_clean_leaves_the_frame_as_it_was():
    microscope = SimulatedMicroscope(seed=0, tip_state="crashed")
    microscope.tip_clean(200e-9, 200e-9)
    microscope.tip = Tip()
    assert np.ptp(plane_removed(microscope.scan(200e-9, 200e-9, 20e-9, 64))) < DEBRIS_RANGE_M


def test_a_coarse_move_gives_a_new_area_and_counts_its_crashes():
    microscope = SimulatedMicroscope(seed=0)
    first = microscope.scan(*FRAME)
    crashes = microscope.move_area()
    assert microscope.area_index == 1 and crashes >= 0
    assert not np.allclose(plane_removed(first), plane_removed(microscope.scan(*FRAME)),
                           atol=1e-11)


def test_a_good_tip_ages_at_the_documented_rate_while_scanning():
    microscope = SimulatedMicroscope(seed=8)
    n, duration = 4000, 16.0
    changes = 0
    for _ in range(n):
        microscope.tip = Tip()
        microscope._age_tip(duration, 0.0, 0.0, 1e-12)
        changes += not microscope.tip.is_good
    p = 1 - math.exp(-(sim_microscope.DEGRADE_PER_SCAN + duration / sim_microscope.DEGRADE_TIME_S))
    assert abs(changes / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


def test_scanning_over_a_cluster_ages_the_tip_faster():
    microscope = SimulatedMicroscope(seed=8)
    microscope.sample.add_cluster(microscope.rng, 0.0, 0.0, 1e-9)
    n, changes = 1000, 0
    for _ in range(n):
        microscope.tip = Tip()
        microscope._age_tip(0.0, 0.0, 0.0, 10e-9)
        changes += not microscope.tip.is_good
    p = 1 - math.exp(-(sim_microscope.DEGRADE_PER_SCAN + sim_microscope.DEBRIS_PICKUP))
    assert abs(changes / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n)


def shift_px(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Displacement (rows, cols) of b against a, by phase correlation (whole pixels)."""
    fa, fb = np.fft.fft2(plane_removed(a)), np.fft.fft2(plane_removed(b))
    corr = np.fft.ifft2(fb * np.conj(fa) / (np.abs(fb * np.conj(fa)) + 1e-30)).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    return (peak + 32) % 64 - 32


def test_creep_moves_the_frame_right_after_an_approach_and_settles_later():
    microscope = SimulatedMicroscope(seed=1, settle_s=0.0)
    microscope.approach()
    early = [microscope.scan(*FRAME) for _ in range(2)]
    microscope.idle(1000.0)
    late = [microscope.scan(*FRAME) for _ in range(2)]
    assert np.abs(shift_px(*early)).max() >= 1
    assert np.abs(shift_px(*late)).max() == 0


def test_noise_is_one_over_f_with_line_offsets():
    rng = np.random.default_rng(0)
    frames = np.array([render.noise(rng, 64, 64) for _ in range(200)])
    power = np.mean(np.abs(np.fft.rfft(frames.reshape(200, -1), axis=1)) ** 2, axis=0)
    assert power[1:9].mean() > 20 * power[1024:2048].mean()
    line_offsets = np.diff(frames.mean(axis=2), axis=1).std() / math.sqrt(2)
    assert line_offsets == pytest.approx(render.LINE_NOISE_M, rel=0.35, abs=0)


def test_realtime_mode_sleeps_for_the_scan_time_on_the_injected_clock():
    now, slept = [100.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    microscope = SimulatedMicroscope(seed=0, realtime=0.5, sleep=sleep, clock=lambda: now[0],
                                     scan_speed_m_s=80e-9)
    slept.clear()
    microscope.scan(0.0, 0.0, 10e-9, 64)
    assert slept == [pytest.approx(0.5 * 2 * 64 * 10e-9 / 80e-9)]


def test_without_realtime_nothing_sleeps():
    def sleep(seconds: float) -> None:
        raise AssertionError("slept")

    microscope = SimulatedMicroscope(seed=0, sleep=sleep)
    microscope.scan(*FRAME)
    microscope.condition(ACTIONS.get("pulse +4 V"), 0.0, 0.0)
    microscope.approach()


def test_instrument_time_advances_by_the_scan_duration():
    microscope = SimulatedMicroscope(seed=0)
    start = microscope.time_s
    microscope.scan(0.0, 0.0, 10e-9, 64)
    assert microscope.time_s - start == pytest.approx(2 * 64 * 10e-9 / 80e-9)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
def test_a_bad_scan_speed_is_refused(bad):
    with pytest.raises(ValueError, match="scan speed"):
        SimulatedMicroscope(seed=0).set_scan_speed(bad)


def molecule_contrast(bias_v: float, setpoint_a: float = 25e-12) -> float:
    microscope = SimulatedMicroscope(seed=0)
    microscope.set_bias(bias_v)
    microscope.set_setpoint(setpoint_a)
    return float(np.ptp(plane_removed(microscope.scan(*FRAME))))


def test_molecules_image_weakly_near_zero_bias():
    assert molecule_contrast(0.05) < 0.6 * molecule_contrast(1.0)


def test_a_larger_setpoint_images_molecules_slightly_stronger():
    assert molecule_contrast(1.0, 25e-12) < molecule_contrast(1.0, 250e-12) \
        < 1.3 * molecule_contrast(1.0, 25e-12)


def test_a_non_positive_setpoint_is_refused():
    with pytest.raises(ValueError, match="setpoint must be positive"):
        SimulatedMicroscope(seed=0).set_setpoint(0.0)


def test_a_tip_left_idle_for_days_has_changed_by_its_next_scan():
    changed = 0
    for seed in range(20):
        microscope = SimulatedMicroscope(seed=seed)
        microscope.idle(5 * 24 * 3600.0)
        microscope.scan(*FRAME)
        changed += not microscope.tip.is_good
    assert changed >= 18  # 1 - exp(-30) per tip: all but a fluke
