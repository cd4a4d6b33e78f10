"""The queue server, for real: Redis, `start-re-manager` on the shipped startup folder, the
`qserver` command line; a queued survey lands in the Tiled catalog with its images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from bluesky_queueserver.manager.comms import zmq_single_request
from services import debian_program, free_port, listening, wait_until

from deepspm_bluesky.data import open_catalog

BIN = Path(sys.executable).parent
STARTUP = Path(str(resources.files("deepspm_bluesky.profiles").joinpath("qserver")))


@pytest.fixture(scope="module")
def redis_address(tmp_path_factory):
    """A redis-server of its own on 127.0.0.1 (own port, own folder, nothing saved)."""
    program = debian_program("redis-server", "redis-server")
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([program, "--bind", "127.0.0.1", "--port", str(port), "--dir",
                               str(folder), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: listening(port), "redis listening", server, timeout_s=20)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def manager(redis_address, tmp_path_factory):
    """`start-re-manager` on the shipped startup folder, its catalog in a temporary folder."""
    catalog = tmp_path_factory.mktemp("qserver") / "catalog"
    address = f"tcp://127.0.0.1:{free_port()}"
    log = (catalog.parent / "manager.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "start-re-manager"), "--startup-dir", str(STARTUP), "--redis-addr",
         redis_address, "--zmq-control-addr", address, "--update-existing-plans-devices",
         "NEVER", "--zmq-publish-console", "OFF"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group to end
        env={**os.environ, "DEEPSPM_CATALOG": str(catalog), "OMP_NUM_THREADS": "1"})
    status = lambda: zmq_single_request("status", zmq_server_address=address, timeout=1000)[0]  # noqa: E731
    wait_until(lambda: status() is not None, "manager answering", process, timeout_s=60)
    yield address, catalog, status, process
    zmq_single_request("manager_stop", {"option": "safe_off"}, zmq_server_address=address,
                       timeout=1000)  # closes the environment too
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:  # the watchdog, the manager and the worker together
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def qserver(address: str, *args: str) -> str:
    result = subprocess.run([str(BIN / "qserver"), "--zmq-control-addr", address, *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_shipped_plan_list_offers_the_survey_with_typed_parameters():
    listed = yaml.safe_load((STARTUP / "existing_plans_and_devices.yaml").read_text())
    survey = {p["name"]: p for p in listed["existing_plans"]["autonomous_survey"]["parameters"]}
    assert survey["stm"]["annotation"]["devices"] == {"STMs": ["stm"]}
    assert survey["mode"]["annotation"]["enums"] == {"Modes": ["operational", "training"]}
    assert survey["agent"]["annotation"]["type"] == "typing.Optional[str]"
    assert "stm" in listed["existing_devices"]


def test_a_queued_survey_runs_and_lands_in_tiled_with_its_images(manager):
    address, catalog, status, process = manager
    qserver(address, "environment", "open")
    wait_until(lambda: status()["worker_environment_state"] == "idle", "environment open",
               process, timeout_s=90)
    item = {"name": "autonomous_survey", "args": ["stm"],
            "kwargs": {"max_images": 3, "agent": "random", "md": {"sample": "queued"}}}
    qserver(address, "queue", "add", "plan", json.dumps(item))
    qserver(address, "queue", "start")
    wait_until(lambda: status()["items_in_queue"] == 0 and status()["manager_state"] == "idle",
               "queue done", process, timeout_s=90)
    history = zmq_single_request("history_get", zmq_server_address=address)[0]["items"]
    assert history[-1]["result"]["exit_status"] == "completed", history[-1]["result"]
    run = open_catalog(catalog)[-1]
    assert run.start["sample"] == "queued" and run.start["plan_args"]["agent"] == "random"
    assert run["primary"]["stm_image"].shape == (3, 64, 64)
    assert run.stop["exit_status"] == "success"
