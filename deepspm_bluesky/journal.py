"""Replaying a survey's journal: runs a killed process left behind reach Tiled once, closed.

The journal (`deepspm_bluesky.callbacks.JournalWriter`) holds every document of a run until
its stop document is in Tiled. A journal still on disk at the next start means the process
died: the run is closed with exit_status "abort" and a reason saying so, any partial copy
in Tiled is replaced by the whole journaled run (so nothing is written twice), and the
journal is removed.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

logger = logging.getLogger(__name__)
DIED_REASON = ("the survey process died before closing this run; closed from its journal "
               "on restart")


SUFFIX = ".jsonl"


def journal_path(directory: str | Path, run_uid: str) -> Path:
    """The journal file of one run in `directory`."""
    return Path(directory) / f"{run_uid}{SUFFIX}"


@dataclass(frozen=True)
class JournaledRun:
    """The documents of one journaled run, in order."""

    documents: list[tuple[str, dict]] = field(repr=False)

    @property
    def uid(self) -> str:
        return self.documents[0][1]["uid"]

    @property
    def closed(self) -> bool:
        """True when the run's stop document is in the journal."""
        return self.documents[-1][0] == "stop"

    @property
    def stop(self) -> dict:
        return self.documents[-1][1]

    def events(self, stream: str) -> list[dict]:
        """The event documents of `stream`, in order."""
        uids = {doc["uid"] for name, doc in self.documents
                if name == "descriptor" and doc.get("name") == stream}
        return [doc for name, doc in self.documents
                if name == "event" and doc["descriptor"] in uids]


def read_journal(path: str | Path) -> list[tuple[str, dict]]:
    """The (name, doc) pairs of a journal file, arrays and NaNs restored.

    A last line cut short (the process died while writing it) is dropped; any other bad
    line is an error naming the file and line.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    documents, descriptors = [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            name, doc = entry["name"], entry["doc"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            if number >= len(lines) - 1:
                logger.warning("%s: dropped a last line cut short (%s)", path, error)
                break
            raise ValueError(f"journal {path}, line {number}: not a document ({error})") from None
        if name == "descriptor":
            descriptors[doc["uid"]] = doc["data_keys"]
        elif name == "event":
            _restore_arrays(doc, descriptors.get(doc["descriptor"], {}))
        documents.append((name, doc))
    if not documents or documents[0][0] != "start":
        raise ValueError(f"journal {path} does not begin with a start document")
    return documents


def _restore_arrays(event: dict, data_keys: dict) -> None:
    """Lists back to arrays of the described dtype; null numbers back to NaN."""
    for key, value in event["data"].items():
        info = data_keys.get(key, {})
        if info.get("dtype") == "array" and isinstance(value, list):
            event["data"][key] = np.asarray(value, dtype=info.get("dtype_numpy") or None)
        elif info.get("dtype") == "number" and value is None:
            event["data"][key] = math.nan


def _stop_document(documents: list[tuple[str, dict]]) -> dict:
    """The stop document a dead process never wrote: abort, with the reason."""
    start = documents[0][1]
    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    counts: dict[str, int] = {name: 0 for name in streams.values()}
    for name, doc in documents:
        if name == "event":
            counts[streams[doc["descriptor"]]] += 1
    return {"run_start": start["uid"], "time": time.time(), "uid": str(uuid.uuid4()),
            "exit_status": "abort", "reason": DIED_REASON, "num_events": counts}


def recover(directory: str | Path, client) -> list[JournaledRun]:
    """Replay every journal in `directory` into the Tiled `client`; remove each afterwards.

    A run without a stop document is closed here (exit_status "abort", `DIED_REASON`).

    Returns
    -------
    list of JournaledRun
        One per journal found, oldest first, each as it now is in Tiled.
    """
    from .data import tiled_writer

    recovered = []
    for path in sorted(Path(directory).glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
        run = JournaledRun(read_journal(path))
        if not run.closed:
            run.documents.append(("stop", _stop_document(run.documents)))
        if run.uid in client and "stop" in (client[run.uid].metadata or {}):
            logger.info("run %s is already whole in Tiled", run.uid)
        else:
            if run.uid in client:  # a partial copy: replaced by the whole journaled run
                client.delete_contents(run.uid, recursive=True, external_only=False)
            writer = tiled_writer(client, batch_size=len(run.documents))
            try:
                for name, doc in run.documents:
                    writer(name, doc)
            finally:
                writer.close()
        path.unlink()
        recovered.append(run)
    return recovered
