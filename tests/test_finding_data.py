"""Finding surveys in a real embedded catalog (Tiled queries on the start documents) and a
survey's images as an xarray Dataset in metres."""

from __future__ import annotations

import datetime as dt
import time

import bluesky.plans as bp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from deepspm_bluesky.data import list_surveys, open_catalog, search_surveys, survey_dataset
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session

SURVEYS = [  # (start-document extras, mode): what the CLI's --sample and --md put there
    ({"sample": "Ag(100)", "operator": "ada"}, "operational"),
    ({"sample": "Au(111)", "operator": "bob"}, "operational"),
    ({"sample": "Ag(100)", "operator": "bob"}, "training"),
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A catalog with three short surveys and one plain count; the time between the 2nd
    and the 3rd survey; the uids of the surveys, in order."""
    client = open_catalog(tmp_path_factory.mktemp("catalog"))
    session = survey_session(client, progress=False)
    stm = simulated_stm(seed=5)
    uids, between = [], None
    for index, (md, mode) in enumerate(SURVEYS):
        if index == 2:
            between = time.time()
            time.sleep(0.05)
        result = session.engine(autonomous_survey(stm, max_images=3, mode=mode, md=md))
        uids.append(result.run_start_uids[0])
    session.engine(bp.count([stm], 1, md={"sample": "Ag(100)"}))  # not a survey
    session.writer.close()
    stm.destroy()
    return client, between, uids


@pytest.mark.parametrize(("criteria", "expected"), [
    ({}, [0, 1, 2]),
    ({"sample": "Ag(100)"}, [0, 2]),
    ({"operator": "bob"}, [1, 2]),
    ({"mode": "training"}, [2]),
    ({"backend": "sim", "sample": "Au(111)"}, [1]),
    ({"backend": "labview"}, []),
    ({"sample": "Ag(100)", "operator": "ada", "mode": "training"}, []),
])
def test_surveys_are_found_by_sample_operator_mode_and_backend(catalog, criteria, expected):
    client, _, uids = catalog
    assert list(search_surveys(client, **criteria)) == [uids[i] for i in expected]


def test_surveys_are_found_by_start_time(catalog):
    client, between, uids = catalog
    later = dt.datetime.fromtimestamp(between)
    assert list(search_surveys(client, since=later)) == [uids[2]]
    assert list(search_surveys(client, until=later)) == uids[:2]
    assert list(search_surveys(client, since=later.isoformat(), sample="Ag(100)")) == [uids[2]]
    today = dt.date.fromtimestamp(between)
    assert list(search_surveys(client, date=today)) == uids
    assert list(search_surveys(client, date=str(today - dt.timedelta(days=1)))) == []
    assert list(search_surveys(client, since=str(today), until=str(today))) == uids


def test_the_survey_list_has_one_row_per_survey_with_what_it_was(catalog):
    client, _, uids = catalog
    table = list_surveys(client, operator="bob")
    assert list(table["uid"]) == uids[1:]
    assert list(table["sample"]) == ["Au(111)", "Ag(100)"]
    assert list(table["mode"]) == ["operational", "training"]
    assert list(table["images"]) == [3, 3]
    assert set(table["exit_status"]) == {"success"}
    assert table["start"].is_monotonic_increasing


def test_a_surveys_dataset_holds_its_images_decisions_and_positions_in_metres(catalog):
    client, _, uids = catalog
    run = client[uids[1]]
    dataset = survey_dataset(run)
    stream = run["primary"]
    table = stream.base["internal"].read()
    config = stream.metadata["configuration"]["stm"]["data"]
    assert dataset["height"].dims == ("image", "y", "x")
    assert_allclose(dataset["height"].to_numpy(), stream["stm_image"].read())
    assert list(dataset["verdict"].to_numpy()) == list(table["verdict"])
    assert_allclose(dataset["p_good"], table["p_good"])
    assert_allclose(dataset["scan_x"], table["stm_scanner_x_nm"] * 1e-9)
    assert_allclose(dataset["scan_y"], table["stm_scanner_y_nm"] * 1e-9)
    size_m, pixel_m = (config["stm_scanner_size_nm"] * 1e-9,
                       config["stm_scanner_size_nm"] * 1e-9 / config["stm_scanner_pixels"])
    for axis in ("x", "y"):  # pixel centres across the frame, centred on the scan position
        assert_allclose(np.diff(dataset[axis]), pixel_m)
        assert_allclose(dataset[axis][-1] - dataset[axis][0] + pixel_m, size_m)
        assert abs(float(dataset[axis].mean())) < 1e-18
    assert dataset.attrs["bias_v"] == config["stm_bias"]
    assert dataset.attrs["setpoint_a"] == config["stm_current"]
    assert (dataset.attrs["sample"], dataset.attrs["operator"]) == ("Au(111)", "bob")
    assert np.all(np.diff(dataset["time"].to_numpy()) > np.timedelta64(0))


def test_a_plain_count_gives_images_without_decisions_and_a_missing_stream_is_named(catalog):
    client, _, _ = catalog
    count_run = client[-1]  # the plain count: a primary stream, but no survey decisions
    dataset = survey_dataset(count_run)
    assert "verdict" not in dataset and dataset.sizes["image"] == 1
    with pytest.raises(KeyError, match="no 'checks' stream"):
        survey_dataset(count_run, stream_name="checks")
