"""Pauses, the STOP file and failure endings of a survey, counted on the instrument and in Tiled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from bluesky.utils import RunEngineInterrupted
from test_survey import always, events

from deepspm_bluesky.callbacks import JournaledTiledWriter
from deepspm_bluesky.data import open_catalog, tiled_writer
from deepspm_bluesky.devices import STM, Outage
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.sim import SimulatedMicroscope


class CountingMicroscope(SimulatedMicroscope):
    """A simulated microscope that counts every call and runs `hooks[(call, n)]` inside it."""

    def __init__(self, hooks=None, **options) -> None:
        super().__init__(**options)
        self.calls: Counter[str] = Counter()
        self.hooks = hooks or {}

    def _count(self, call: str) -> None:
        self.calls[call] += 1
        hook = self.hooks.get((call, self.calls[call]))
        if hook is not None:
            hook()

    def scan(self, *args):
        self._count("scan")
        return super().scan(*args)

    def condition(self, *args):
        self._count("condition")
        return super().condition(*args)

    def tip_clean(self, *args):
        self._count("tip_clean")
        return super().tip_clean(*args)

    def approach(self):
        self._count("approach")
        return super().approach()


def run_through_pauses(RE, plan) -> int:
    """Run `plan`, resuming after every pause; return how many pauses there were."""
    pauses = 0
    try:
        RE(plan)
    except RunEngineInterrupted:
        pauses += 1
    while RE.state == "paused":
        try:
            RE.resume()
        except RunEngineInterrupted:
            pauses += 1
    return pauses


def acted(documents, *, index: bool) -> list[dict]:
    return [e["data"] for e in events(documents, "actions")
            if (e["data"]["action_index"] >= 0) == index]


@pytest.mark.parametrize("defer", [False, True])
def test_pauses_during_scans_and_actions_never_repeat_an_action_or_an_image(RE, documents,
                                                                             defer):
    pause = lambda: RE.request_pause(defer=defer)  # noqa: E731  (called from the backend)
    hooks = {("scan", 3): pause, ("condition", 2): pause, ("condition", 5): pause,
             ("scan", 9): pause}
    scope = CountingMicroscope(hooks, seed=3)
    stm = STM(backend=scope, name="stm")
    pauses = run_through_pauses(RE, autonomous_survey(stm, max_images=12, mode="training",
                                                      classifier=always(0.0)))
    assert pauses == 4
    primary = events(documents, "primary")
    assert [e["seq_num"] for e in primary] == list(range(1, 13)), "each image exactly once"
    conditioned = [e for e in primary if e["data"]["check"] == "ok"]  # bad: conditioned
    assert scope.calls["condition"] == len(acted(documents, index=True)) == len(conditioned)
    assert len(conditioned) >= 8
    assert scope.calls["scan"] <= 12 + pauses, "at most the scan in progress is redone"
    stop = [d for n, d in documents if n == "stop"][0]
    assert stop["exit_status"] == "success"
    assert stop["num_events"]["primary"] == 12


def test_a_pause_during_a_tip_clean_and_approach_sends_each_once(RE, documents):
    pause = lambda: RE.request_pause(defer=False)  # noqa: E731
    scope = CountingMicroscope({("tip_clean", 1): pause, ("approach", 1): pause}, seed=1,
                               tip_state="crashed")
    stm = STM(backend=scope, name="stm")
    run_through_pauses(RE, autonomous_survey(stm, max_images=3))
    recoveries = Counter(a["action"] for a in acted(documents, index=False))
    assert scope.calls["tip_clean"] == recoveries["clean"] >= 1


def test_a_paused_survey_reaches_tiled_whole(RE, tmp_path):
    client = open_catalog(tmp_path / "catalog")
    writer = JournaledTiledWriter(tiled_writer(client, batch_size=5))
    RE.subscribe(writer)
    pause = lambda: RE.request_pause(defer=False)  # noqa: E731
    stm = STM(backend=CountingMicroscope({("scan", 4): pause, ("scan", 11): pause}, seed=2),
              name="stm")
    run_through_pauses(RE, autonomous_survey(stm, max_images=15, state_dir=str(tmp_path / "s")))
    writer.close()
    run = client[-1]
    assert run["primary"]["stm_image"].shape == (15, 64, 64)
    table = run["primary"].base["internal"].read(["seq_num"])
    assert list(table["seq_num"]) == list(range(1, 16))
    assert not list((tmp_path / "s" / "journal").iterdir()), "journal removed once in Tiled"


def test_the_stop_file_ends_the_survey_cleanly_at_the_next_cycle(RE, documents, tmp_path):
    state = tmp_path / "state"
    scope = CountingMicroscope({("scan", 4): lambda: (state / "STOP").touch()}, seed=5)
    RE(autonomous_survey(STM(backend=scope, name="stm"), max_images=50, state_dir=str(state)))
    stop = [d for n, d in documents if n == "stop"][0]
    assert stop["exit_status"] == "success"
    assert "STOP file" in stop["reason"] and "images 4" in stop["reason"]
    assert len(events(documents, "primary")) == 4
    assert not (state / "STOP").exists(), "honoured once, so the same survey can continue"


def test_contact_that_approaches_cannot_restore_ends_the_survey_as_failed(RE, documents):
    class Unapproachable(CountingMicroscope):
        def approach(self):
            self._count("approach")  # the tip stays out of contact

    stm = STM(backend=Unapproachable(seed=1, tip_state="no_contact"), name="stm")
    RE(autonomous_survey(stm, max_images=20))
    stop = [d for n, d in documents if n == "stop"][0]
    assert stop["exit_status"] == "fail"
    assert "no tunnelling contact in 3 images" in stop["reason"]
    assert stop["num_events"]["primary"] == 3


def test_the_survey_refuses_to_go_on_when_the_disk_is_nearly_full(RE, documents, tmp_path):
    stm = STM(backend=CountingMicroscope(seed=1), name="stm")
    RE(autonomous_survey(stm, max_images=5, state_dir=str(tmp_path), min_free_mb=1e12))
    stop = [d for n, d in documents if n == "stop"][0]
    assert stop["exit_status"] == "fail" and "disk nearly full" in stop["reason"]
    assert stm.backend.calls["scan"] == 0


def test_a_refused_agent_choice_is_recorded_and_never_executed(RE, documents):
    class Stubborn:
        def suggest(self, image, allowed):
            return len(allowed)  # outside the table

        def observe(self, transition):
            return {}

    scope = CountingMicroscope(seed=1)
    stm = STM(backend=scope, name="stm")
    RE(autonomous_survey(stm, max_images=3, mode="training", classifier=always(0.0),
                         agent=Stubborn()))
    refused = acted(documents, index=True)
    assert [a["outcome"] for a in refused] == ["refused"] * 3
    assert scope.calls["condition"] == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs (needs root, as CI runs), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root: run the tests as root (CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # files may still be open


def test_a_full_disk_ends_the_survey_with_table_and_images_agreeing(RE, small_disk: Path):
    client = open_catalog(small_disk / "catalog")
    writer = JournaledTiledWriter(tiled_writer(client, batch_size=10))
    RE.subscribe(writer)
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 8_000_000))
    stm = STM(backend=CountingMicroscope(seed=4), name="stm")
    RE(autonomous_survey(stm, max_images=2000, state_dir=str(small_disk / "state"),
                         min_free_mb=4.0))
    writer.close()
    run = client[-1]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and "disk nearly full" in stop["reason"]
    images = run["primary"]["stm_image"].shape[0]
    table = run["primary"].base["internal"].read(["seq_num"])
    assert 0 < images == len(table) == stop["num_events"]["primary"] < 2000


def test_outages_the_instrument_reports_are_recorded_in_the_run(RE, documents):
    class Blinking(CountingMicroscope):
        def take_outages(self):
            if self.calls["scan"] != 3:
                return []
            return [Outage(start=100.0, end=108.5, cause="connection reset")]

    stm = STM(backend=Blinking(seed=1), name="stm")
    RE(autonomous_survey(stm, max_images=6))
    (outage,) = [e["data"] for e in events(documents, "outages")]
    assert outage["outage_s"] == 8.5 and outage["cause"] == "connection reset"
    start = [d for n, d in documents if n == "start"][0]
    assert start["instrument"]["backend"] == "sim"


def test_a_corrupt_state_file_is_refused_before_any_run_opens(RE, documents, tmp_path):
    stm = STM(backend=CountingMicroscope(seed=1), name="stm")
    RE(autonomous_survey(stm, max_images=2, state_dir=str(tmp_path)))
    progress = tmp_path / "policy.json"
    policy = json.loads(progress.read_text())
    policy["policy"]["counters"]["bad_in_row"] = -4  # whatever the two verdicts left there
    progress.write_text(json.dumps(policy))
    documents.clear()
    with pytest.raises(ValueError, match="policy.json.*counters.bad_in_row"):
        autonomous_survey(stm, max_images=2, state_dir=str(tmp_path))
    progress.write_text("{not json")
    with pytest.raises(ValueError, match="policy.json is corrupt"):
        autonomous_survey(stm, max_images=2, state_dir=str(tmp_path))
    assert documents == [], "nothing half-opened"
