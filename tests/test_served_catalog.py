"""`deepspm-bluesky serve`: a real Tiled server on 127.0.0.1 over the same catalog files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from services import answers, free_port, wait_until
from tiled.client import from_uri

from deepspm_bluesky.data import open_catalog, serve_catalog, tiled_writer
from deepspm_bluesky.plans import autonomous_survey

KEY = "secretTestKey42"


@pytest.fixture
def served(tmp_path):
    """(uri, catalog dir) of a `deepspm-bluesky serve` process, stopped afterwards."""
    port = free_port()
    cli = Path(sys.executable).parent / "deepspm-bluesky"
    server = subprocess.Popen(
        [str(cli), "serve", "--catalog", str(tmp_path / "cat"), "--port", str(port),
         "--api-key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{uri}/healthz"), "tiled server", server, timeout_s=60)
    yield uri, tmp_path / "cat"
    server.terminate()
    server.wait(timeout=10)


def test_a_survey_written_over_http_is_in_the_catalog_files(served, RE, stm):
    uri, directory = served
    RE.subscribe(tiled_writer(open_catalog(uri, api_key=KEY)))
    RE(autonomous_survey(stm, max_images=4))
    images = open_catalog(directory)[-1]["primary"]["stm_image"]
    assert images.shape == (4, 64, 64)
    assert np.all(np.isfinite(images.read()))


def test_the_server_refuses_a_wrong_api_key(served):
    uri, _ = served
    with pytest.raises(Exception, match="401|[Uu]nauthori[sz]ed|[Ii]nvalid"):
        list(from_uri(uri, api_key="wrong"))


def test_an_api_key_tiled_would_reject_is_refused_before_serving(tmp_path):
    with pytest.raises(ValueError, match="only letters and digits"):
        serve_catalog(tmp_path, port=free_port(), api_key="has-dashes")
