"""Expected failures as a user meets them, in real subprocesses: the command line names the
problem in a line or two and exits 2; the IPython profile says it once and still gives RE,
catalog and the plans."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiled.server import SimpleTiledServer

from deepspm_bluesky.profiles.ipython import install_profile

CLI = str(Path(sys.executable).parent / "deepspm-bluesky")


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_clean_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr
    for word in words:
        assert word in result.stderr


def test_an_unreachable_instrument_is_named_in_one_line(tmp_path):
    port = closed_port()
    result = run([CLI, "survey", "--backend", "labview", "--port", str(port), "--catalog",
                  str(tmp_path / "catalog")])
    assert_one_clean_error(result, f"labview instrument at 127.0.0.1:{port}", "does not answer")


def test_a_refused_api_key_is_named_in_one_line(tmp_path):
    server = SimpleTiledServer(directory=tmp_path / "served", api_key="rightKey1")
    try:
        uri = server.uri.split("?")[0]  # without its own api_key query
        result = run([CLI, "survey", "--images", "2", "--catalog", uri, "--api-key", "wrongKey2"])
    finally:
        server.close()
    assert_one_clean_error(result, "refused the API key")


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    return install_profile(tmp_path_factory.mktemp("ipython"))


def start_profile(profile_dir: Path, catalog: Path, **env: str) -> subprocess.CompletedProcess:
    """IPython with the deepspm profile; prints what it defined, then asks for a survey."""
    code = ("print('DEFINED', type(RE).__name__, type(catalog).__name__, stm)\n"
            "try:\n    RE(autonomous_survey(max_images=2))\n"
            "except RuntimeError as error:\n    print('REFUSED', error)")
    return run([sys.executable, "-m", "IPython", f"--profile-dir={profile_dir}", "--no-banner",
                "-c", code], DEEPSPM_CATALOG=str(catalog), **env)


def banner_and_definitions(result: subprocess.CompletedProcess, catalog: Path) -> list[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("deepspm profile")]
    assert f"catalog {catalog.resolve()}" in lines[-1], "the banner names the folder"
    assert "DEFINED RunEngine CatalogOfBlueskyRuns None" in result.stdout
    assert "REFUSED no stm in this session" in result.stdout
    return lines


def test_the_profile_without_a_host_says_so_and_still_defines_the_session(profile_dir,
                                                                        tmp_path):
    catalog = tmp_path / "catalog"
    result = start_profile(profile_dir, catalog, DEEPSPM_BACKEND="nanonis", DEEPSPM_PORT="6501")
    lines = banner_and_definitions(result, catalog)
    assert len(lines) == 2 and "needs DEEPSPM_HOST" in lines[0]
    assert "stm: none" in lines[1]


def test_the_profile_with_an_unreachable_instrument_says_so_and_still_defines_the_session(
        profile_dir, tmp_path):
    catalog, port = tmp_path / "catalog", closed_port()
    result = start_profile(profile_dir, catalog, DEEPSPM_BACKEND="labview",
                           DEEPSPM_HOST="127.0.0.1", DEEPSPM_PORT=str(port))
    lines = banner_and_definitions(result, catalog)
    assert len(lines) == 2 and f"127.0.0.1:{port} does not answer" in lines[0]
