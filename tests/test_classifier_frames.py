"""Frames of any size reach the network one documented way (`network_input`), and the
`classify` command judges the images of files."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from deepspm_bluesky.cli import app
from deepspm_bluesky.ml.preprocessing import network_input, preprocess
from deepspm_bluesky.sim import SimulatedMicroscope


def test_a_64_px_frame_reaches_the_network_exactly_as_preprocess_brings_it():
    image = SimulatedMicroscope(seed=2).scan(0.0, 0.0, 10e-9, 64)
    assert_array_equal(network_input(image, pixel_nm=10 / 64), preprocess(image)[0])


def test_a_large_frame_is_area_averaged_to_64_px():
    """A 256-px frame of a plane with one raised 64 x 64 px block: the block becomes
    16 x 16 px at the same place, its height kept."""
    image = np.zeros((256, 256))
    image[64:128, 128:192] = 2e-10
    data = network_input(image)
    assert data.shape == (64, 64) and data.dtype == np.float32
    assert_allclose(data[18:30, 34:46], 1.0, atol=1e-6)  # 200 pm above the plane
    assert_allclose(data[:12, :12], -1.0, atol=1e-6)  # the plane


def test_a_frame_larger_than_25_nm_is_cut_to_its_central_25_nm():
    image = np.zeros((400, 400))  # 100 nm at 0.25 nm per pixel
    image[:40, :40] = 5e-10  # a cluster in a corner, outside the central 25 nm
    with_size = network_input(image, pixel_nm=0.25)
    assert_allclose(with_size, -1.0, atol=1e-6)
    assert network_input(image).max() > 0  # without the pixel size the whole frame is seen


def test_a_non_square_frame_is_cut_to_its_central_square():
    image = np.zeros((64, 96))
    image[:, :16] = 3e-10  # outside the central 64 columns
    assert_allclose(network_input(image), -1.0, atol=1e-6)


@pytest.mark.parametrize("image, kwargs, message", [
    (np.zeros((4, 64)), {}, "at least 8 x 8"),
    (np.full((64, 64), np.nan), {}, "NaN"),
    (np.zeros((64, 64)), {"pixel_nm": 0.0}, "pixel_nm must be positive"),
])
def test_bad_frames_are_value_errors_naming_the_problem(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        network_input(image, **kwargs)


def test_classify_prints_checks_p_good_familiarity_and_verdict_per_image(tmp_path):
    microscope = SimulatedMicroscope(seed=5)
    stack = np.stack([microscope.scan(x, 0.0, 10e-9, 128) for x in (0.0, 50e-9, 100e-9)])
    np.save(tmp_path / "frames.npy", stack)
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "frames.npy"),
                                      "--frame-nm", "10"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    pattern = re.compile(r"frames\.npy\[(\d)\] +frame +10 nm +checks ok +P\(good\) (\S+) +"
                         r"familiar (yes|no) +-> (good|bad|unfamiliar)$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == [0, 1, 2]
    assert all(0.0 <= float(m.group(2)) <= 1.0 for m in parsed)
    # a good tip on the simulator's own surface, 128 px brought to 64: judged good
    assert [m.group(4) for m in parsed].count("good") >= 2


def test_classify_reports_a_constant_height_sxm_as_such():
    from real_files import nanonis_stm_sxm

    result = CliRunner().invoke(app, ["classify", str(nanonis_stm_sxm())])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("-> constant height")


def test_classify_names_an_unknown_file_type(tmp_path):
    (tmp_path / "scan.gwy").write_bytes(b"x")
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "scan.gwy")])
    assert result.exit_code != 0
    assert "unknown file type '.gwy'" in result.output
