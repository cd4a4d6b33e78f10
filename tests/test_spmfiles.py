"""Reading Nanonis .sxm files: a real STM file from pynxtools-spm, and files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from real_files import nanonis_stm_sxm

from deepspm_bluesky.devices.nanonis import Z_CHANNEL
from deepspm_bluesky.servers.nanonis import Z_SLOT
from deepspm_bluesky.spmfiles import read_sxm, to_our_row_order


@pytest.fixture(scope="module")
def real():
    return read_sxm(nanonis_stm_sxm())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# -- the real file -----------------------------------------------------------------------------
def test_z_is_signal_slot_14_as_the_nanonis_backend_and_fake_server_assume(real):
    z = real.channels[real.channel_names.index("Z")]
    assert (z.slot, z.unit) == (14, "m")
    assert Z_CHANNEL == Z_SLOT == z.slot


def test_the_scan_settings_come_in_si_units(real):
    assert real.z_m.shape == (256, 256) and real.z_m.dtype == np.float32
    assert_allclose(real.frame_size_m, (4e-9, 4e-9))
    assert_allclose(real.pixel_size_m, (4e-9 / 256, 4e-9 / 256))
    assert_allclose(real.centre_m, (9.964751e-08, -5.581927e-08))
    assert (real.bias_v, real.setpoint_a, real.angle_deg) == (-0.05, 2.5e-11, 120.0)
    assert real.scan_direction == "down"
    assert real.channel_names == ("Z", "Current")
    assert real.complete


def test_a_constant_height_file_has_flat_z_at_the_controllers_height_and_contrast_in_current(
        real):
    assert not real.z_controller_on
    height_m = float(real.header["Z-Controller>Z (m)"])
    assert_allclose(real.z_m, height_m, rtol=1e-6)  # Z really is the first block, in metres
    current = real.image("Current")
    assert np.ptp(current) > 1e-9, "the molecules show in the current"
    assert np.all(current < 0), "at -50 mV sample bias the tunnelling current is negative"


def test_backward_lines_turned_left_to_right_match_the_forward_lines(real):
    forward, backward = real.image("Current"), real.image("Current", "backward")
    turned = correlation(forward, backward)
    assert turned > 0.95
    assert turned > correlation(forward, backward[:, ::-1]) + 0.1


def test_the_last_recorded_line_is_nearest_the_current_read_at_the_end_of_the_scan(real):
    # a 'down' scan's last recorded line is our row 0 (bottom); the header's Current is read
    # when the file is saved, right after that line
    end_a = float(real.header["Current>Current (A)"])
    lines = real.image("Current").mean(axis=1)
    assert abs(lines[0] - end_a) < abs(lines[-1] - end_a)


def test_an_unknown_channel_names_those_the_file_has(real):
    with pytest.raises(KeyError, match=r"no backward 'Phase' image; it has \[\('Current'"):
        real.image("Phase", "backward")


# -- files written here: known answers -------------------------------------------------------
def write_sxm(path: Path, frames: list[np.ndarray], *, direction: str = "up",
              byte_order: str = "MSBFIRST", directions: str = "both",
              truncate: int = 0) -> Path:
    """A minimal .sxm: Z (and Current) frames, stored as recorded."""
    lines, pixels = frames[0].shape
    header = "\n".join([
        ":NANONIS_VERSION:", "2", ":SCANIT_TYPE:", f"              FLOAT            {byte_order}",
        ":SCAN_PIXELS:", f"       {pixels}       {lines}", ":SCAN_RANGE:",
        "           2.000000E-8           1.000000E-8", ":SCAN_OFFSET:", "  1.0E-9  -2.0E-9",
        ":SCAN_ANGLE:", "  0.000E+0", ":SCAN_DIR:", direction, ":BIAS:", "  1.000E+0",
        ":Z-CONTROLLER:", "\tName\ton\tSetpoint\tP-gain",
        "\tlog Current\t1\t2.500E-11 A\t1.0E-12 m", ":DATA_INFO:",
        "\tChannel\tName\tUnit\tDirection\tCalibration\tOffset",
        f"\t14\tZ\tm\t{directions}\t1.0E-9\t0.0E+0",
        f"\t0\tCurrent\tA\t{directions}\t1.0E-9\t0.0E+0", "", ":SCANIT_END:", "", ""])
    dtype = (">" if byte_order == "MSBFIRST" else "<") + "f4"
    data = b"".join(np.asarray(f, dtype).tobytes() for f in frames)
    path.write_bytes(header.encode() + b"\x1a\x04" + data[:len(data) - truncate])
    return path


def ramps(lines: int = 3, pixels: int = 4) -> list[np.ndarray]:
    """Frames whose value is 100 * frame + 10 * row + column, as recorded."""
    row, col = np.mgrid[:lines, :pixels]
    return [100.0 * k + 10 * row + col for k in range(4)]


@pytest.mark.parametrize("byte_order", ["MSBFIRST", "LSBFIRST"])
def test_an_upward_scan_keeps_its_rows_and_turns_backward_lines(tmp_path, byte_order):
    frames = ramps()
    scan = read_sxm(write_sxm(tmp_path / "up.sxm", frames, byte_order=byte_order))
    assert_array_equal(scan.z_m, frames[0])
    assert_array_equal(scan.image("Z", "backward"), frames[1][:, ::-1])
    assert_array_equal(scan.image("Current"), frames[2])
    assert scan.z_m.shape == (3, 4)
    assert_allclose(scan.pixel_size_m, (2e-8 / 4, 1e-8 / 3))
    assert scan.z_controller_on and scan.setpoint_a == 2.5e-11


def test_a_downward_scan_is_flipped_so_that_row_0_is_the_bottom_line(tmp_path):
    frames = ramps()
    scan = read_sxm(write_sxm(tmp_path / "down.sxm", frames, direction="down"))
    assert_array_equal(scan.z_m, frames[0][::-1])
    assert_array_equal(scan.image("Current", "backward"), frames[3][::-1, ::-1])


def test_forward_only_channels_are_read_one_frame_each(tmp_path):
    frames = ramps()[:2]
    scan = read_sxm(write_sxm(tmp_path / "fwd.sxm", frames, directions="forward"))
    assert_array_equal(scan.image("Current"), frames[1])
    with pytest.raises(KeyError):
        scan.image("Z", "backward")


def test_a_truncated_file_is_refused_naming_the_file_and_the_sizes(tmp_path):
    path = write_sxm(tmp_path / "cut.sxm", ramps(), truncate=8)
    with pytest.raises(ValueError, match=r"cut\.sxm: 4 frames of 3 x 4 float32 need 192 bytes"
                                         r" of data, the file has 184"):
        read_sxm(path)


def test_a_file_that_is_not_sxm_is_refused(tmp_path):
    path = tmp_path / "image.npy"
    np.save(path, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"image\.npy: not a Nanonis \.sxm file"):
        read_sxm(path)


def test_row_order_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="'sideways'"):
        to_our_row_order(np.zeros((2, 2)), "sideways")
