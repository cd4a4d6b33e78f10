"""The wiring of a survey session: a RunEngine writing to Tiled through the journal.

Used by the CLI and the IPython profile so the wiring exists once. `run_plan` adds what a
shell user needs: Ctrl-C pauses at the next checkpoint and asks what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

from .callbacks import JournaledTiledWriter, SurveyProgress
from .data import batch_size_for, tiled_writer

CHOICES = ("resume", "stop", "abort")


@dataclass
class Session:
    """A RunEngine and the journaled Tiled writer subscribed to it."""

    engine: RunEngine
    writer: JournaledTiledWriter


def survey_session(client, *, backend: str = "sim", progress: bool = True) -> Session:
    """A RunEngine that writes every run into the Tiled `client` (journaled when asked).

    Parameters
    ----------
    client
        Tiled client of the catalog.
    backend
        Backend name: the simulator's events are written in batches, an instrument's each
        as it lands (`deepspm_bluesky.data.batch_size_for`).
    progress
        Subscribe a progress bar too.
    """
    engine = RunEngine({}, call_returns_result=True)
    writer = JournaledTiledWriter(tiled_writer(client, batch_size=batch_size_for(backend)))
    engine.subscribe(writer)
    if progress:
        engine.subscribe(SurveyProgress())
    return Session(engine, writer)


class _EndingReported(logging.Filter):
    """Drops bluesky's "Run aborted" traceback: `run_plan`'s caller reports the ending."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Run aborted"


_ENDING_REPORTED = _EndingReported()


def run_plan(engine: RunEngine, plan, *, ask: Callable[[str], str] = input,
             echo: Callable[[str], None] = print):
    """Run `plan`; after each pause (Ctrl-C) ask resume / stop / abort until it ends.

    The first Ctrl-C pauses at the next checkpoint (bluesky's deferred pause); at the
    question, Ctrl-C or end of input aborts. Returns the `RunEngineResult`; the caller
    reports how the run ended (bluesky's own traceback of an abort is not printed).
    """
    logging.getLogger("bluesky").addFilter(_ENDING_REPORTED)
    try:
        return engine(plan)
    except RunEngineInterrupted:
        pass
    while True:
        choice, reason = _ask_choice(ask, echo)
        try:
            if choice == "resume":
                return engine.resume()
            if choice == "stop":
                return engine.stop()
            return engine.abort(reason=reason)
        except RunEngineInterrupted:
            continue


def _ask_choice(ask: Callable[[str], str], echo: Callable[[str], None]) -> tuple[str, str]:
    """The user's answer among `CHOICES`, and why; Ctrl-C or end of input means abort."""
    echo("survey paused (nothing scanned is lost).")
    while True:
        try:
            answer = ask(f"{' / '.join(CHOICES)}? ").strip().lower()
        except KeyboardInterrupt:
            return "abort", "aborted by Ctrl-C while paused"
        except EOFError:
            return "abort", "aborted: no answer at the pause prompt (end of input)"
        matches = [choice for choice in CHOICES if answer and choice.startswith(answer)]
        if len(matches) == 1:
            return matches[0], f"{matches[0]} chosen by the user at the pause prompt"
        echo(f"please answer one of {', '.join(CHOICES)}")
