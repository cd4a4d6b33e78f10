"""One session factory: the STM, the RunEngine and the catalog, wired once.

The CLI, the IPython profile and the queue-server startup open their sessions here
(`open_session`), so the backend choice, the journaled Tiled writer, the progress bar and the
scan ids that grow across sessions of a catalog exist once. `run_plan` adds what a shell user
needs: Ctrl-C pauses at the next checkpoint and asks what to do.
"""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

from .callbacks import JournaledTiledWriter, SurveyProgress
from .data import batch_size_for, default_catalog, open_catalog, tiled_writer

CHOICES = ("resume", "stop", "abort")
BACKENDS = ("sim", "labview", "nanonis")
CONNECT_WAIT_S = 5.0  # how long an instrument is waited for when a session opens
API_KEY_VAR = "DEEPSPM_API_KEY"  # a served catalog's key, for the profile and the queue server


class SessionError(Exception):
    """A session cannot open as asked: a missing setting, an unreachable instrument or
    catalog, a refused API key. The message is one line for the user."""


@dataclass(frozen=True)
class InstrumentSettings:
    """Which STM a session drives: the backend and its options.

    Attributes
    ----------
    backend
        ``sim``, ``labview`` or ``nanonis``.
    host, port
        The instrument's address (network backends).
    seed, realtime
        The simulator's seed and pace (1 scans as slowly as a real STM).
    outage_s
        How long a lost instrument is waited for during a survey.
    connect_wait_s
        How long the instrument is waited for when the session opens.
    """

    backend: str = "sim"
    host: str | None = None
    port: int | None = None
    seed: int = 0
    realtime: float = 0.0
    outage_s: float = 600.0
    connect_wait_s: float = CONNECT_WAIT_S

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> InstrumentSettings:
        """Settings from ``DEEPSPM_BACKEND`` (default ``sim``), ``DEEPSPM_HOST``,
        ``DEEPSPM_PORT`` and ``DEEPSPM_SEED``; a `SessionError` names what is missing."""
        backend = env.get("DEEPSPM_BACKEND", "sim") or "sim"
        if backend not in BACKENDS:
            raise SessionError(f"DEEPSPM_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "sim":
            return cls(seed=_integer(env, "DEEPSPM_SEED", 0))
        missing = [name for name in ("DEEPSPM_HOST", "DEEPSPM_PORT") if not env.get(name)]
        if missing:
            raise SessionError(f"the {backend} backend needs {' and '.join(missing)} "
                               "(the instrument's address); none is set")
        return cls(backend, host=env["DEEPSPM_HOST"], port=_integer(env, "DEEPSPM_PORT", 0))


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        raise SessionError(f"{name}={env[name]!r} is not a whole number") from None


def make_stm(settings: InstrumentSettings, *, name: str = "stm"):
    """The `STM` of `settings`; an instrument that does not answer within
    `settings.connect_wait_s` raises `SessionError` naming its address."""
    from . import devices

    if settings.backend == "sim":
        return devices.simulated_stm(name, seed=settings.seed, realtime=settings.realtime)
    if settings.backend not in BACKENDS:
        raise SessionError(f"unknown backend {settings.backend!r}; known: {', '.join(BACKENDS)}")
    if not settings.host or settings.port is None:
        raise SessionError(f"the {settings.backend} backend needs a host and a port")
    factory = {"labview": devices.labview_stm, "nanonis": devices.nanonis_stm}[settings.backend]
    where = f"{settings.backend} instrument at {settings.host}:{settings.port}"
    try:
        with _quiet_outages():
            stm = factory(settings.host, settings.port, name,
                          outage_s=min(settings.outage_s, settings.connect_wait_s))
    except (ConnectionError, TimeoutError) as error:
        raise SessionError(f"the {where} does not answer: {_last_error(error)}") from None
    except (devices.MalformedReply, devices.InstrumentError) as error:
        raise SessionError(f"the {where} answered wrongly: {error}") from None
    stm.backend.link.outage_s = settings.outage_s  # the survey waits out longer outages
    return stm


def _last_error(error: BaseException) -> str:
    text = str(error)
    return text.split("last error: ")[-1] if "last error: " in text else text


@contextmanager
def _quiet_outages() -> Iterator[None]:
    """No "connection lost, retrying" warnings while a session waits for its instrument:
    the `SessionError` says it once."""
    transport = logging.getLogger("deepspm_bluesky.devices.transport")
    level = transport.level
    transport.setLevel(logging.ERROR)
    try:
        yield
    finally:
        transport.setLevel(level)


def connect_catalog(location: str | os.PathLike | None = None, *, api_key: str | None = None):
    """The Tiled client of a catalog folder or served URI (`data.open_catalog`), with a
    `SessionError` naming the problem (unreachable server, refused key, not a folder)."""
    import httpx

    where = str(location) if location is not None else default_catalog()
    try:
        client = open_catalog(where, api_key=api_key)
        # a served Tiled checks the key only when asked for data; not by len(client), which
        # the client caches for a second: len(catalog) right after a short survey said 0
        largest_scan_id(client)
        return client
    except httpx.HTTPStatusError as error:
        status = error.response.status_code
        if status in (401, 403):
            raise SessionError(f"the Tiled server at {where} refused the API key "
                               f"(HTTP {status}); give the right one with --api-key or "
                               f"{API_KEY_VAR}") from None
        raise SessionError(f"the Tiled server at {where} answered HTTP {status}") from None
    except httpx.HTTPError as error:
        raise SessionError(f"no Tiled server answers at {where}: {error}") from None
    except OSError as error:
        raise SessionError(f"catalog {where}: {error}") from None


def catalog_location(client, location: str | os.PathLike | None) -> str:
    """Where the catalog is, as a person names it: the folder, or the served URI."""
    where = str(location) if location is not None else default_catalog()
    if where.startswith(("http://", "https://")):
        return client.uri
    return str(Path(where).expanduser().resolve())


@dataclass
class Session:
    """A RunEngine writing to Tiled through the journal; the STM and catalog it was opened with."""

    engine: RunEngine
    writer: JournaledTiledWriter
    catalog: object = None
    location: str = ""
    stm: object = None
    problems: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Stop the writer's flushing thread and let go of the instrument."""
        self.writer.close()
        if self.stm is not None:
            self.stm.destroy()


def open_session(instrument: InstrumentSettings | None = None,
                 catalog: str | os.PathLike | None = None, *, api_key: str | None = None,
                 progress: bool = True, stm_required: bool = True) -> Session:
    """The catalog, the RunEngine writing into it, and the STM.

    Parameters
    ----------
    instrument
        Which STM; None opens the session without one.
    catalog
        A catalog folder or a served Tiled URI (default: `data.default_catalog()`).
    api_key
        The served Tiled's API key.
    progress
        Subscribe a progress bar.
    stm_required
        False: an instrument that cannot be had leaves ``stm`` None, the reason in
        ``problems`` (the IPython profile still gives its user RE, catalog and plans).

    Raises
    ------
    SessionError
        Naming what could not be had.
    """
    stm, problems = None, []
    if instrument is not None:
        try:
            stm = make_stm(instrument)
        except SessionError as error:
            if stm_required:
                raise
            problems.append(str(error))
    try:
        client = connect_catalog(catalog, api_key=api_key)
    except SessionError:
        if stm is not None:
            stm.destroy()
        raise
    backend = instrument.backend if instrument is not None else "sim"
    session = survey_session(client, backend=backend, progress=progress)
    session.catalog, session.location = client, catalog_location(client, catalog)
    session.stm, session.problems = stm, problems
    return session


def describe_stm(stm) -> str:
    """The STM in a few words: ``sim (seed 0)`` or ``labview at HOST:PORT``."""
    info = stm.instrument_metadata()
    if info["backend"] == "sim":
        return f"simulated (seed {info['seed']})"
    return f"{info['backend']} at {info['host']}:{info['port']}"


def survey_session(client, *, backend: str = "sim", progress: bool = True) -> Session:
    """A RunEngine that writes every run into the Tiled `client` (journaled when asked).

    Scan ids go on from the largest in the catalog, so ``catalog[n]`` is one run, however
    many sessions wrote there (and two sessions writing into one served catalog do not
    take the same id).

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
    engine = RunEngine({}, call_returns_result=True, scan_id_source=next_scan_id(client))
    writer = JournaledTiledWriter(tiled_writer(client, batch_size=batch_size_for(backend)))
    engine.subscribe(writer)
    if progress:
        engine.subscribe(SurveyProgress())
    return Session(engine, writer)


def next_scan_id(client) -> Callable[[dict], int]:
    """A RunEngine ``scan_id_source``: one more than the largest scan id in the catalog
    or in this RunEngine's metadata."""

    def source(md: dict) -> int:
        return max(int(md.get("scan_id") or 0), largest_scan_id(client)) + 1

    return source


def largest_scan_id(client) -> int:
    """The largest ``scan_id`` of the runs in the catalog (0 for an empty one)."""
    # not len(client): Tiled caches a container's length for a second, and a survey that
    # opens and closes within it would leave `len(catalog)` stale for the user
    newest = client.sort(("start.scan_id", -1)).values().head(1)
    return int((newest[0].start or {}).get("scan_id") or 0) if newest else 0


class _EndingReported(logging.Filter):
    """Drops bluesky's "Run aborted" traceback: `run_plan`'s caller reports the ending."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Run aborted"


_ENDING_REPORTED = _EndingReported()


def ask_at_pause(prompt: str) -> str:
    """`input`, except that a Ctrl-C pressed as the prompt appears is never lost.

    CPython runs a Python signal handler only between bytecodes: a SIGINT that lands after
    `input` has printed its prompt but before its read starts (or one the kernel hands to
    another thread) waits for the next line, and the survey hung at the prompt. Here the
    wait is short `select` calls, between which the Ctrl-C is raised (within 0.2 s). A
    stream without a file descriptor (a test runner's captured stdin) is read by `input`.
    """
    try:
        descriptor = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return input(prompt)
    print(prompt, end="", flush=True)
    line = bytearray()
    while True:
        while not select.select([descriptor], [], [], 0.2)[0]:
            pass
        byte = os.read(descriptor, 1)  # unbuffered: nothing read past the line
        if byte in (b"", b"\n"):
            if not (byte or line):
                raise EOFError
            return line.decode(errors="replace")
        line += byte


def run_plan(engine: RunEngine, plan, *, ask: Callable[[str], str] = ask_at_pause,
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
