"""`export RUN --format labels`: a run's judged images into good/ and bad/ folders, ready for
fine-tuning the classifier."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from deepspm_bluesky.cli import app
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.judging import GOOD_TIP_THRESHOLD
from deepspm_bluesky.ml.data import load_folder


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog")
    result = CliRunner().invoke(app, ["demo", "--images", "5", "--catalog", str(path),
                                      "--seed", "4"])
    assert result.exit_code == 0, result.output
    return path, open_catalog(path)[-1]["primary"].base["internal"].read()


def test_export_labels_sorts_every_judged_image_by_its_p_good_into_a_training_folder(
        catalog, tmp_path):
    path, table = catalog
    result = CliRunner().invoke(app, ["export", "latest", "--catalog", str(path),
                                      "--out", str(tmp_path), "--format", "labels"])
    assert result.exit_code == 0, result.output
    judged = np.isfinite(table["p_good"]) & table["check"].isin(["ok", ""])
    good = judged & (table["p_good"] >= GOOD_TIP_THRESHOLD)
    assert len(list((tmp_path / "good").glob("*.npy"))) == int(good.sum())
    assert len(list((tmp_path / "bad").glob("*.npy"))) == int((judged & ~good).sum())
    assert f"{int(good.sum())} images in {tmp_path / 'good'}" in result.output
    data = load_folder(tmp_path)  # what train-classifier --data reads
    assert len(data) == int(judged.sum()) > 0
    assert data.images.shape[1:] == (64, 64)


def test_export_labels_of_a_run_without_p_good_names_what_is_missing(tmp_path):
    from deepspm_bluesky.export import export_labels

    class Run(dict):
        metadata = {"start": {"uid": "abcdef123456"}}

    with pytest.raises(KeyError, match="no 'primary' stream"):
        export_labels(Run(), tmp_path)
