"""The Tiled store: locations, errors."""

from __future__ import annotations

import subprocess
import sys

import bluesky.plan_stubs as bps
import pytest

from deepspm_bluesky.data import (
    ENV_VAR,
    batch_size_for,
    default_catalog,
    open_catalog,
    tiled_writer,
)


def test_the_environment_variable_names_the_default_catalog(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "here"))
    assert default_catalog() == str(tmp_path / "here")


def test_without_the_variable_the_catalog_lives_in_a_per_user_folder(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_catalog().endswith("catalog")
    assert "deepspm-bluesky" in default_catalog()


def test_a_new_catalog_directory_is_created_empty(tmp_path):
    client = open_catalog(tmp_path / "new")
    assert len(client) == 0
    assert (tmp_path / "new" / "catalog.db").is_file()


def test_processes_that_open_one_new_catalog_at_once_all_succeed(tmp_path):
    """A survey and `watch` started together both found the folder new; one of them died
    with "table already exists" (the CI failure of the watch page's browser test)."""
    directory, go = tmp_path / "together", tmp_path / "go"
    opener = ("import os, sys, time; from deepspm_bluesky.data import open_catalog\n"
              "print('ready', flush=True)\n"
              "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
              "print(len(open_catalog(sys.argv[1])))")
    processes = [subprocess.Popen([sys.executable, "-c", opener, str(directory), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    assert [p.stdout.readline() for p in processes] == ["ready\n"] * 4
    go.touch()  # all of them open it at once
    results = [(p.wait(timeout=300), p.stdout.read().strip(), p.stderr.read()[-300:])
               for p in processes]
    assert [result[:2] for result in results] == [(0, "0")] * 4, results
    assert len(open_catalog(directory, create=False)) == 0


def test_a_file_in_place_of_the_catalog_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a catalog")
    with pytest.raises(NotADirectoryError, match="is a file"):
        open_catalog(tmp_path / "file")


@pytest.mark.parametrize(("backend", "visible"), [("labview", 2), ("sim", 0)])
def test_instrument_images_are_readable_while_the_run_goes_on(RE, stm, tmp_path, backend,
                                                              visible):
    client = open_catalog(tmp_path / "cat")
    RE.subscribe(tiled_writer(client, batch_size=batch_size_for(backend)))
    seen = []

    def plan():
        uid = yield from bps.open_run()
        for _ in range(2):
            yield from bps.trigger_and_read([stm])
        run = client[uid]  # batched: the stream itself may not be written yet
        stream = run["primary"] if "primary" in run else {}
        seen.append(len(stream["stm_image"]) if "stm_image" in stream else 0)
        yield from bps.close_run()

    RE(plan())
    assert seen == [visible]
    assert client[-1]["primary"]["stm_image"].shape == (2, 64, 64)
