"""Ctrl-C and kill -9 of `deepspm-bluesky survey` in a subprocess, as they happen to users."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.journal import JournaledRun, read_journal

BIN = Path(sys.executable).parent
PROMPT = "resume / stop / abort?"


class Survey:
    """`deepspm-bluesky survey` running in a subprocess, its output collected as it comes."""

    def __init__(self, tmp_path: Path, images: int, *extra: str) -> None:
        self.state, self.catalog = tmp_path / "state", tmp_path / "catalog"
        command = [str(BIN / "deepspm-bluesky"), "survey", "--images", str(images),
                   "--state", str(self.state), "--catalog", str(self.catalog), *extra]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.output = ""
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while chunk := self.process.stdout.read(1):
            self.output += chunk

    def journaled_images(self) -> int:
        """Primary events in the journal of the open run (0 before it starts)."""
        journals = list((self.state / "journal").glob("*.jsonl"))
        if not journals:
            return 0
        return len(JournaledRun(read_journal(journals[0])).events("primary"))

    def wait_for(self, condition, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {what}; exit {self.process.poll()}, output:\n{self.output}")
            time.sleep(0.05)

    def answer(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self) -> int:
        try:
            code = self.process.wait(timeout=180)
        except subprocess.TimeoutExpired:  # show how far it got
            self.process.kill()
            pytest.fail(f"the survey did not end; output:\n{self.output}")
        time.sleep(0.1)  # the collecting thread reads the last bytes
        return code


def last_run(catalog: Path):
    run = open_catalog(catalog)[-1]
    table = run["primary"].base["internal"].read(["seq_num"])
    return run, list(table["seq_num"]), run["primary"]["stm_image"].shape[0]


def check_whole(survey: Survey, exit_status: str, reason: str):
    """The last run ended as said, holds every image once, and the journal is cleared."""
    assert "Traceback" not in survey.output
    run, seq_nums, images = last_run(survey.catalog)
    assert run.metadata["stop"]["exit_status"] == exit_status
    assert reason in run.metadata["stop"]["reason"]
    assert seq_nums == list(range(1, images + 1)), "every image once, none lost"
    assert images == run.metadata["stop"]["num_events"]["primary"]
    assert not list((survey.state / "journal").iterdir()), "the journal is cleared"
    return images


def test_ctrl_c_pauses_then_resume_goes_on_and_stop_ends_the_run(tmp_path):
    survey = Survey(tmp_path, 400, "--realtime", "0.005")
    survey.wait_for(lambda: survey.journaled_images() >= 5, "images journaled")
    survey.process.send_signal(signal.SIGINT)
    survey.wait_for(lambda: PROMPT in survey.output, "pause prompt")
    paused_at = survey.journaled_images()
    survey.answer("resume")
    survey.wait_for(lambda: survey.journaled_images() >= paused_at + 5, "images after resume")
    survey.process.send_signal(signal.SIGINT)
    survey.wait_for(lambda: survey.output.count(PROMPT) == 2, "second pause prompt")
    survey.answer("stop")
    assert survey.finish() == 0, survey.output
    images = check_whole(survey, "success", "stopped by the user")
    assert paused_at + 5 <= images < 400


def test_a_second_ctrl_c_while_paused_aborts_with_everything_kept(tmp_path):
    survey = Survey(tmp_path, 400, "--realtime", "0.005")
    survey.wait_for(lambda: survey.journaled_images() >= 5, "images journaled")
    survey.process.send_signal(signal.SIGINT)
    survey.wait_for(lambda: PROMPT in survey.output, "pause prompt")
    survey.process.send_signal(signal.SIGINT)
    assert survey.finish() == 2, survey.output
    assert 5 <= check_whole(survey, "abort", "aborted by Ctrl-C while paused") < 400
    assert "survey abort: images " in survey.output, "the summary is printed on abort too"


def test_a_killed_survey_is_closed_whole_on_restart_and_its_ground_not_rescanned(tmp_path):
    survey = Survey(tmp_path, 2000)
    survey.wait_for(lambda: survey.journaled_images() >= 30, "images journaled")
    survey.process.kill()
    survey.finish()
    (journal,) = (survey.state / "journal").glob("*.jsonl")
    killed = JournaledRun(read_journal(journal))
    shown = killed.events("primary")
    old_places = {(e["data"]["stm_scanner_x_nm"], e["data"]["stm_scanner_y_nm"]) for e in shown}

    restart = Survey(tmp_path, 10)
    assert restart.finish() == 0, restart.output
    assert f"recovered run {killed.uid}" in restart.output
    catalog = open_catalog(survey.catalog)
    old = catalog[killed.uid]
    assert old.metadata["stop"]["exit_status"] == "abort"
    assert "process died" in old.metadata["stop"]["reason"]
    table = old["primary"].base["internal"].read(["seq_num"])
    assert list(table["seq_num"]) == list(range(1, len(shown) + 1)), "all shown, once"
    assert old["primary"]["stm_image"].shape[0] == len(shown)
    new = catalog[-1]
    places = new["primary"].base["internal"].read(["stm_scanner_x_nm", "stm_scanner_y_nm"])
    new_places = set(zip(places["stm_scanner_x_nm"], places["stm_scanner_y_nm"], strict=True))
    assert len(new_places) == 10 and not new_places & old_places


ASKING = """
import signal, sys, threading, time
from deepspm_bluesky.session import ask_at_pause
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # SIGINT may go there
if sys.argv[1] == "other-thread":  # the kernel can no longer interrupt the main thread's read
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
try:
    print(repr(ask_at_pause("choose? ")))
except KeyboardInterrupt:
    print("interrupted")
except EOFError:
    print("end of input")
"""


def asking(how: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", ASKING, how], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.read(len("choose? ")) == "choose? "
    return process


def test_a_ctrl_c_the_main_thread_does_not_receive_still_ends_the_pause_prompt():
    """input() would wait for the next line: the hang of a second Ctrl-C while paused."""
    process = asking("other-thread")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0  # stdin still open: no line, no end of input
    assert process.stdout.read().strip() == "interrupted"
    process.stdin.close()


@pytest.mark.parametrize(("typed", "heard"), [("st\r\n", "'st\\r'"), ("", "end of input")])
def test_the_pause_prompt_reads_one_line_or_the_end_of_input(typed, heard):
    process = asking("main-thread")
    assert process.communicate(typed, timeout=20)[0].strip() == heard
