"""`export RUN --format gwy|npz|png`: a survey for Gwyddion, numpy and people, from a real
embedded catalog."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from deepspm_bluesky.cli import app
from deepspm_bluesky.data import open_catalog, survey_dataset
from deepspm_bluesky.gwyddion import read_gwy


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """(catalog folder, the survey's Dataset) of a 4-image simulated survey."""
    path = tmp_path_factory.mktemp("catalog")
    result = CliRunner().invoke(app, ["demo", "--images", "4", "--catalog", str(path),
                                      "--seed", "2"])
    assert result.exit_code == 0, result.output
    return path, survey_dataset(open_catalog(path)[-1])


def export(catalog, out, format: str):
    """The one file `export latest --format FORMAT` wrote into `out`."""
    result = CliRunner().invoke(app, ["export", "latest", "--catalog", str(catalog),
                                      "--out", str(out), "--format", format])
    assert result.exit_code == 0, result.output
    (path,) = out.glob(f"*.{format}")
    assert f"wrote {path} (4 images)" in result.output
    return path


def test_a_gwyddion_file_holds_every_image_in_metres_with_its_frame(survey, tmp_path):
    catalog, dataset = survey
    channels = read_gwy(export(catalog, tmp_path, "gwy"))
    assert len(channels) == dataset.sizes["image"] == 4
    size_m = dataset.attrs["frame_size_m"]
    for index, (heights, field, meta) in enumerate(channels):
        frame = dataset.isel(image=index)
        assert_allclose(heights, frame["height"].to_numpy(), rtol=0, atol=0)
        assert (field.xreal, field.yreal) == (size_m, size_m)
        assert_allclose([field.xoff, field.yoff],
                        [float(frame["scan_x"]) - size_m / 2, float(frame["scan_y"]) - size_m / 2])
        assert field.si_unit_xy.unitstr == field.si_unit_z.unitstr == "m"
        assert meta["verdict"] == str(frame["verdict"].item())
        assert float(meta["Bias (V)"]) == dataset.attrs["bias_v"]
        assert float(meta["Setpoint (A)"]) == dataset.attrs["setpoint_a"]
        assert_allclose(float(meta["p_good"]), float(frame["p_good"]), atol=1e-4)


def test_an_npz_holds_the_images_with_their_coordinates(survey, tmp_path):
    catalog, dataset = survey
    with np.load(export(catalog, tmp_path, "npz")) as arrays:  # no pickle needed
        assert_allclose(arrays["height"], dataset["height"].to_numpy())
        for name in ("x", "y", "scan_x", "scan_y", "p_good"):
            assert_allclose(arrays[name], dataset[name].to_numpy())
        assert list(arrays["verdict"]) == list(dataset["verdict"].to_numpy())
        assert arrays["time"].dtype.kind == "M"
        attrs = json.loads(str(arrays["attrs"]))
    assert attrs["frame_size_m"] == dataset.attrs["frame_size_m"]
    assert attrs["uid"] == dataset.attrs["uid"]


def test_a_contact_sheet_draws_every_levelled_image(survey, tmp_path):
    catalog, _ = survey
    picture = matplotlib.image.imread(export(catalog, tmp_path, "png"))
    assert picture.shape[0] > 100 and picture.shape[1] > 4 * 100  # one row of four panels
    assert np.std(picture[..., :3]) > 0.05  # images and titles drawn, not a blank page
