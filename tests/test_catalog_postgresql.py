"""A facility catalog: `deepspm-bluesky serve --database postgresql://...` on a real
PostgreSQL (Debian's package, a throw-away cluster on its own port), a survey written to it
over HTTP with an API key, read back, searched and exported."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from services import answers, debian_program, free_port, listening, wait_until

from deepspm_bluesky.data import open_catalog, search_surveys, survey_dataset
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.session import survey_session

KEY = "facilityKey42"
PASSWORD = "s3cret-pw"
CLI = str(Path(sys.executable).parent / "deepspm-bluesky")


@pytest.fixture(scope="module")
def postgresql():
    """The URI (user `tiled`, a password) of a new database on a PostgreSQL of its own."""
    initdb = debian_program("/usr/lib/postgresql/*/bin/initdb", "postgresql")
    bin_dir = Path(initdb).parent
    # PostgreSQL refuses to run as root: then the cluster belongs to the `postgres` user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="deepspm-pg-"))
    if as_user:
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
    (folder / "pw").write_text(PASSWORD)
    os.chmod(folder / "pw", 0o644)
    subprocess.run([*as_user, initdb, "-D", str(folder / "data"), "-U", "tiled", "--no-sync",
                    "--auth=scram-sha-256", f"--pwfile={folder / 'pw'}", "-E", "UTF8"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        [*as_user, str(bin_dir / "postgres"), "-D", str(folder / "data"), "-h", "127.0.0.1",
         "-p", str(port), "-k", str(folder), "-c", "fsync=off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: listening(port), "postgres", server)
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "tiled", "catalog"], check=True, capture_output=True,
                       env=dict(os.environ, PGPASSWORD=PASSWORD), timeout=60)
        yield f"postgresql://tiled:{PASSWORD}@127.0.0.1:{port}/catalog"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def served(postgresql, tmp_path_factory):
    """(URI, files folder, banner) of `deepspm-bluesky serve --database` on PostgreSQL."""
    files = tmp_path_factory.mktemp("files")
    port = free_port()
    server = subprocess.Popen(
        [CLI, "serve", "--database", postgresql, "--catalog", str(files), "--port", str(port),
         "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), "deepspm-bluesky serve",
                   server)
        yield f"http://127.0.0.1:{port}", files, server.stdout.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def survey(served):
    """The uid of a 4-image survey written to the served catalog by a survey session."""
    uri, _, _ = served
    session = survey_session(open_catalog(uri, api_key=KEY), progress=False)
    stm = simulated_stm(seed=6)
    result = session.engine(autonomous_survey(stm, max_images=4,
                                              md={"sample": "Cu(111)", "operator": "ada"}))
    session.writer.close()
    stm.destroy()
    return result.run_start_uids[0]


def test_a_survey_lands_with_its_images_in_the_postgresql_catalog(served, survey):
    uri, files, banner = served
    run = open_catalog(uri, api_key=KEY)[survey]
    images = run["primary"]["stm_image"].read()
    assert images.shape == (4, 64, 64) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and np.ptp(images) > 0
    table = run["primary"].base["internal"].read()
    assert len(table) == 4 and table["p_good"].notna().all()
    assert run.metadata["stop"]["exit_status"] == "success"
    # metadata and scalar tables in PostgreSQL, the image arrays as files in the folder
    (table_source,) = run["primary"].base["internal"].data_sources()
    assert table_source.assets[0].data_uri.startswith("postgresql://")
    assert not (files / "catalog.db").exists() and not (files / "tables.db").exists()
    assert any((files / "data").rglob("*")), "no array files"
    assert PASSWORD not in banner and "tiled:***@" in banner


def test_surveys_are_searched_in_postgresql_and_read_as_a_dataset(served, survey):
    uri, _, _ = served
    client = open_catalog(uri, api_key=KEY)
    assert list(search_surveys(client, sample="Cu(111)", operator="ada", backend="sim",
                               since=dt.datetime.now() - dt.timedelta(hours=1))) == [survey]
    assert list(search_surveys(client, sample="Ag(100)")) == []
    dataset = survey_dataset(client[survey])
    assert dataset["height"].shape == (4, 64, 64)
    assert dataset.attrs["frame_size_m"] > 0
