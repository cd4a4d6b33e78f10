"""The journal: documents on disk before Tiled, replayed once after a process died."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from bluesky import RunEngine

from deepspm_bluesky.callbacks import JournaledTiledWriter, RunJournal
from deepspm_bluesky.data import open_catalog, tiled_writer
from deepspm_bluesky.journal import DIED_REASON, JournaledRun, read_journal, recover
from deepspm_bluesky.plans import autonomous_survey


def journal_of_a_survey(stm, directory, images: int = 6) -> list[tuple[str, dict]]:
    """The documents of a short survey, journaled into `directory`; returns them."""
    documents = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    engine(autonomous_survey(stm, max_images=images))
    journal = RunJournal(directory, documents[0][1]["uid"])
    for name, doc in documents:
        journal.write(name, doc)
    return documents


def test_a_journal_reads_back_arrays_and_nans_as_they_were_written(stm, tmp_path):
    documents = journal_of_a_survey(stm, tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    run = JournaledRun(read_journal(path))
    original = [d for n, d in documents if n == "event"]
    replayed = run.events("primary")
    assert len(replayed) == len(original) == 6
    image = replayed[0]["data"]["stm_image"]
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, original[0]["data"]["stm_image"])
    assert run.closed and run.stop["num_events"] == {"primary": 6}


def test_nan_comes_back_as_nan(stm, tmp_path):
    stm.backend.tip = stm.backend.tip.evolve(in_contact=False)  # no_contact: P(good) is NaN
    journal_of_a_survey(stm, tmp_path, images=1)
    (path,) = tmp_path.glob("*.jsonl")
    (event,) = JournaledRun(read_journal(path)).events("primary")
    assert math.isnan(event["data"]["p_good"])


def test_a_line_cut_short_at_the_end_is_dropped_one_in_the_middle_is_an_error(stm, tmp_path):
    journal_of_a_survey(stm, tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    assert read_journal(path)[-1][0] != "stop"
    path.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    with pytest.raises(ValueError, match="line 4"):
        read_journal(path)


def test_recovery_closes_a_run_the_process_never_closed_and_replaces_a_partial_copy(
        stm, tmp_path):
    client = open_catalog(tmp_path / "catalog")
    documents = journal_of_a_survey(stm, tmp_path / "journal")
    (path,) = (tmp_path / "journal").glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the process died before its stop document
    partial = tiled_writer(client, batch_size=2)
    for name, doc in documents[:-3]:  # a few events reached Tiled, the rest did not
        partial(name, doc)
    partial.close()
    (run,) = recover(tmp_path / "journal", client)
    stored = client[run.uid]
    assert stored.metadata["stop"]["exit_status"] == "abort"
    assert stored.metadata["stop"]["reason"] == DIED_REASON
    table = stored["primary"].base["internal"].read(["seq_num"])
    assert list(table["seq_num"]) == [1, 2, 3, 4, 5, 6], "every image once"
    assert not list((tmp_path / "journal").iterdir())
    assert recover(tmp_path / "journal", client) == []


def test_a_journaled_survey_leaves_no_journal_and_a_whole_run(stm, tmp_path):
    client = open_catalog(tmp_path / "catalog")
    writer = JournaledTiledWriter(tiled_writer(client, batch_size=4))
    engine = RunEngine({})
    engine.subscribe(writer)
    engine(autonomous_survey(stm, max_images=9, state_dir=str(tmp_path / "state")))
    writer.close()
    assert client[-1]["primary"]["stm_image"].shape == (9, 64, 64)
    assert not list((tmp_path / "state" / "journal").iterdir())


def test_pending_events_reach_tiled_within_the_wait_limit_without_a_new_document(stm,
                                                                                  tmp_path):
    client = open_catalog(tmp_path / "catalog")
    writer = tiled_writer(client, batch_size=1000, max_wait_s=0.2)
    documents = journal_of_a_survey(stm, tmp_path / "journal", images=3)
    for name, doc in documents[:-1]:  # everything but the stop document
        writer(name, doc)
    run = open_catalog(tmp_path / "catalog")[documents[0][1]["uid"]]  # as another reader
    deadline = time.monotonic() + 10
    try:
        while stored_images(run) < 3:
            assert time.monotonic() < deadline, "pending events never reached Tiled"
            time.sleep(0.05)
    finally:
        writer.close()


def stored_images(run) -> int:
    try:
        return run["primary"]["stm_image"].shape[0]
    except KeyError:  # no stream, or no data written to it yet
        return 0
