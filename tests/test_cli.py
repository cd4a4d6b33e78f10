"""The command line and the IPython profile, run as a user would, in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def read_back(catalog: Path) -> str:
    """A new process opens the catalog and prints what the last run holds."""
    code = (
        "from deepspm_bluesky.data import open_catalog\n"
        f"run = open_catalog({str(catalog)!r})[-1]\n"
        "images = run['primary']['stm_image']\n"
        "print(len(open_catalog(%r)), images.shape, images.dtype)\n" % str(catalog)
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_demo_writes_a_run_that_another_process_reads_back(tmp_path):
    catalog = tmp_path / "cat"
    result = run([str(BIN / "deepspm-bluesky"), "demo", "--images", "20", "--catalog",
                  str(catalog), "--seed", "3"])
    assert result.returncode == 0, result.stderr
    assert "open_catalog(" in result.stdout and str(catalog) in result.stdout
    assert read_back(catalog) == "1 (20, 64, 64) float32"


def test_export_writes_the_images_and_tables_of_a_run(tmp_path):
    catalog, out = tmp_path / "cat", tmp_path / "out"
    cli = str(BIN / "deepspm-bluesky")
    assert run([cli, "demo", "--images", "4", "--catalog", str(catalog)]).returncode == 0
    result = run([cli, "export", "latest", "--catalog", str(catalog), "--out", str(out)])
    assert result.returncode == 0, result.stderr
    (images,) = out.glob("*_primary_stm_image.npy")
    assert np.load(images).shape == (4, 64, 64)
    assert len(list(out.glob("*_primary.csv"))) == 1


def test_the_ipython_profile_binds_a_survey_that_runs_as_typed(tmp_path):
    catalog = tmp_path / "cat"
    ipython_dir = tmp_path / "ipython"
    install = "from deepspm_bluesky.cli import install_profile; print(install_profile())"
    result = run([sys.executable, "-c", install], IPYTHONDIR=str(ipython_dir))
    profile_dir = result.stdout.strip()
    assert Path(profile_dir, "startup", "00-deepspm.py").is_file()
    result = run(
        [sys.executable, "-m", "IPython", f"--profile-dir={profile_dir}", "--no-banner", "-c",
         "RE(autonomous_survey(max_images=3)); print('RUNS', len(catalog), stm.name)"],
        IPYTHONDIR=str(ipython_dir), DEEPSPM_CATALOG=str(catalog),
    )
    assert result.returncode == 0, result.stderr
    assert "RUNS 1 stm" in result.stdout
    assert read_back(catalog) == "1 (3, 64, 64) float32"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_survey_over_the_labview_protocol_runs_from_the_command_line(tmp_path):
    cli = str(BIN / "deepspm-bluesky")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([cli, "labview-server", "--port", str(port), "--seed", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        catalog = tmp_path / "cat"
        result = run([cli, "survey", "--backend", "labview", "--port", str(port), "--images",
                      "5", "--catalog", str(catalog)])
        assert result.returncode == 0, result.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert read_back(catalog) == "1 (5, 64, 64) float32"


def test_a_network_backend_without_a_port_is_refused_clearly():
    result = run([str(BIN / "deepspm-bluesky"), "survey", "--backend", "nanonis"])
    assert result.returncode != 0
    assert "--port" in result.stderr
