"""Tiled is the store: an embedded catalog in a directory by default, or a served one."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import platformdirs
from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.writing.tiled_writer import _RunWriter
from tiled.catalog import from_uri as catalog_from_uri
from tiled.catalog.adapter import DatabaseInitializationError
from tiled.client import Context, from_context, from_uri
from tiled.config import Authentication
from tiled.server.app import build_app
from tiled.storage import EmbeddedSQLStorage, register_storage
from tiled.utils import ensure_uri, path_from_uri

from .collector import settle
from .surveys import list_surveys as list_surveys  # re-exported: finding data lives here
from .surveys import search_surveys as search_surveys
from .surveys import survey_dataset as survey_dataset

ENV_VAR = "DEEPSPM_CATALOG"
# Events per write for the simulator: so many that the time limit decides (at 150 images/s
# a write every 2 s holds ~300); against 200 a write, the in-process Tiled server's CPU fell
# from 1.3-1.4 to 0.65-1.0 ms an image, ~10 % of a simulated survey's CPU ...
SIM_WRITE_BATCH = 1000
MAX_WAIT_S = 2.0  # ... and no event waits longer than this to reach Tiled
INSTRUMENT_WRITE_BATCH = 1  # a flush (~75 ms) is small beside a real scan: show each image now
# The root is a catalog of Bluesky runs, so the client offers catalog[-1], scan ids, search.
ROOT_SPECS = [{"name": "CatalogOfBlueskyRuns", "version": "3.0"}]


def default_catalog() -> str:
    """`$DEEPSPM_CATALOG`, else a `catalog` folder in the per-user data directory."""
    return os.environ.get(ENV_VAR) or str(
        Path(platformdirs.user_data_dir("deepspm-bluesky")) / "catalog"
    )


class CatalogError(ValueError):
    """A catalog that cannot be opened or served as asked, with the reason in one line."""


def catalog_adapter(directory: str | os.PathLike, *, database: str | None = None,
                    create: bool = True):
    """The Tiled adapter of a catalog: metadata in SQLite (or `database`), arrays as zarr files.

    Parameters
    ----------
    directory
        Folder of the data files (zarr arrays; with SQLite also ``catalog.db`` and the
        scalar tables in ``tables.db``).
    database
        ``postgresql://user[:password]@host[:port]/name``: the metadata and the scalar tables
        go into that PostgreSQL database instead (a facility's catalog; many writers).
    create
        Create the folder and the catalog if new; False raises `CatalogError` instead.
        A folder that cannot be written (read-only mount) is opened for reading only.
    """
    directory = Path(directory).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"catalog location {directory} is a file, not a directory")
    if database is not None:
        return _postgresql_adapter(directory, database)
    if not (directory / "catalog.db").is_file():
        if not create:
            raise CatalogError(f"no catalog in {directory} (no catalog.db there)")
        directory.mkdir(parents=True, exist_ok=True)
    tables = f"sqlite:///{directory / 'tables.db'}"
    if not os.access(directory, os.W_OK):  # a read-only mount or archive: read, never init
        register_storage(ReadOnlySQLiteStorage(ensure_uri(tables)))
        return catalog_from_uri(f"sqlite:///{read_only_uri(directory / 'catalog.db')}&uri=true",
                                specs=ROOT_SPECS, readable_storage=[str(directory / "data")])
    with _locked(directory):  # a survey and `watch` started together both find it new
        # initialising (a `tiled catalog init` subprocess, ~3 s, run whether or not the
        # catalog exists) is only for a new catalog
        new = not (directory / "catalog.db").is_file()
        adapter = catalog_from_uri(f"sqlite:///{directory / 'catalog.db'}",
                                   init_if_not_exists=new, specs=ROOT_SPECS,
                                   writable_storage=[str(directory / "data"), tables])
        for database in ("catalog.db", "tables.db"):
            write_ahead_log(directory / database)
    return adapter


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a folder (flock on the folder itself: no file is left).

    Two processes that open a new catalog at once both found it new and both created its
    tables; one of them failed with "table already exists".
    """
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def write_ahead_log(database: Path) -> None:
    """Put a SQLite database (created if missing) in WAL mode, which it keeps.

    In SQLite's default rollback mode a reader and the writer lock each other out: while a
    survey wrote, the watch page's table reads failed with "database is locked". With WAL,
    readers see the last commit and never block the writer. A database another process is
    using stays as it is (the switch needs it alone).
    """
    try:
        with closing(sqlite3.connect(database, timeout=1.0)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        logging.getLogger(__name__).info("%s stays in its journal mode: %s", database, error)


def read_only_uri(database: Path) -> str:
    """SQLite's URI to read `database` in a folder that cannot be written.

    A WAL database closed cleanly is opened immutable: otherwise SQLite would have to create
    its shared-memory file beside it. One left with its log (its writer was killed) is read
    through the log, which SQLite can do read-only while the shared-memory file is there.
    """
    log = database.with_name(database.name + "-wal")
    return f"file:{database}?mode=ro" + ("" if log.is_file() else "&immutable=1")


@dataclasses.dataclass(frozen=True)
class ReadOnlySQLiteStorage(EmbeddedSQLStorage):
    """Tiled's SQLite table store, opened read-only.

    Tiled opens its table store read-write, and refuses a folder it cannot write, even to
    read; registered under the same URI, this one lets a read-only catalog be read.
    """

    def create_adbc_connection(self):
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(read_only_uri(Path(path_from_uri(self.uri))))


def _postgresql_adapter(directory: Path, database: str):
    """Metadata and scalar tables in PostgreSQL, arrays as zarr files under `directory`."""
    scheme = database.split("://", 1)[0] if "://" in database else ""
    if scheme not in ("postgresql", "postgresql+asyncpg"):
        raise CatalogError(f"the database must be a postgresql://user@host:port/name URI, "
                           f"got {redact(database)!r}")
    try:
        adapter = catalog_from_uri(database, init_if_not_exists=True, specs=ROOT_SPECS,
                                   writable_storage=[str(directory / "data"),
                                                     database.replace("+asyncpg", "")])
    except DatabaseInitializationError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise CatalogError(f"cannot open the catalog database {redact(database)}: "
                           f"{lines[-1] if lines else 'initialisation failed'}") from None
    directory.mkdir(parents=True, exist_ok=True)  # only once the database answered
    return adapter


def redact(uri: str) -> str:
    """`uri` with its password, if any, replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", uri)


def open_catalog(path_or_uri: str | os.PathLike | None = None, *, api_key: str | None = None,
                 create: bool = True):
    """The Tiled client of a catalog directory (created if new) or of a served Tiled URI.

    Parameters
    ----------
    path_or_uri
        A directory (embedded: SQLite + array files, no server) or ``http(s)://...``;
        None uses `default_catalog()`.
    api_key
        API key of a served Tiled.
    create
        Create a missing catalog directory; False raises `CatalogError` instead (readers,
        such as export, never leave an empty catalog behind a mistyped path).
    """
    location = str(path_or_uri) if path_or_uri is not None else default_catalog()
    if location.startswith(("http://", "https://")):
        return from_uri(location, api_key=api_key)
    adapter = catalog_adapter(location, create=create)
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)  # no version banner
    with warnings.catch_warnings():  # tiled's in-process transport warns about its own httpx use
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        return from_context(Context.from_app(build_app(adapter)))


def serving_app(directory: str | os.PathLike, *, api_key: str, database: str | None = None):
    """The Tiled web app of a catalog, for clients with `api_key` (see `serve_catalog`)."""
    if not api_key or not api_key.isalnum():
        raise CatalogError("the API key must be non-empty and only letters and digits "
                           "(Tiled's rule: it may travel in a URL)")
    adapter = catalog_adapter(directory, database=database)
    return build_app(adapter, Authentication(single_user_api_key=api_key))


def serve_catalog(directory: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                  api_key: str, database: str | None = None) -> None:
    """Serve a catalog over HTTP (blocks); clients need `api_key`.

    With `database` (``postgresql://...``) the metadata and scalar tables live in PostgreSQL
    and the array files in `directory` (see `catalog_adapter`).
    """
    run_app(serving_app(directory, api_key=api_key, database=database), host=host, port=port)


def run_app(app, *, host: str, port: int) -> None:
    """Run a web app with uvicorn until interrupted, what is alive now out of the garbage
    collector's way (`collector.settle`: a full collection of a served catalog's 380 000
    objects took 220 ms, and answered no client meanwhile)."""
    import uvicorn

    settle()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def batch_size_for(backend: str) -> int:
    """Events per flush for a backend name: batched for `sim`, one by one for instruments."""
    return SIM_WRITE_BATCH if backend == "sim" else INSTRUMENT_WRITE_BATCH


def tiled_writer(client, *, batch_size: int = SIM_WRITE_BATCH,
                 max_wait_s: float = MAX_WAIT_S) -> TimedTiledWriter:
    """A Tiled writer that streams runs into `client`, by count and by time.

    Events are written `batch_size` at a time, and whatever waits is written once the oldest
    pending event is `max_wait_s` old (and all at the end of a run); see `batch_size_for`: a
    real microscope writes each image as it lands.
    """
    return TimedTiledWriter(client, batch_size=batch_size, max_wait_s=max_wait_s)


class TimedTiledWriter(TiledWriter):
    """bluesky-tiled-plugins' `TiledWriter`, writing from its own thread, by count and by time.

    TiledWriter batches by count only, and writes in the caller's thread: with an embedded
    catalog the Tiled server runs there too, so each batch stopped the RunEngine for tens of
    milliseconds. Here the caller only appends each document to a queue (the journal, written
    before, keeps it safe), and one thread writes them in order, woken by a batch's worth of
    events or by time, not by each document (each wake-up takes the GIL from the RunEngine):
    pending events are written when the oldest has waited `max_wait_s` (a simulated survey
    makes ~100 images/s, a real one one every few seconds). A run's start and stop, and every
    event of a writer with `batch_size` 1 (a real instrument's), return only once written,
    so a run is in Tiled when the RunEngine is done with it. An error of the writing thread
    is raised by the next document. Documents come from the RunEngine as they are (current
    schema): no normalizer. `flush` writes what waits now; `close` writes what is queued,
    then stops the thread.
    """

    _FLUSH, _CLOSE = object(), object()  # commands to the writing thread

    def __init__(self, client, *, batch_size: int, max_wait_s: float = MAX_WAIT_S,
                 max_queued: int = 2000) -> None:
        super().__init__(client, batch_size=batch_size, normalizer=None)
        self.max_wait_s = float(max_wait_s)
        self.max_queued = int(max_queued)  # beyond, the caller waits for the writing thread
        self._writers: dict[str, _RunWriter] = {}
        self._pending_since: float | None = None  # when the oldest unwritten event came
        self._queue: deque[tuple] = deque()  # (name, doc, done event or None, time queued)
        self._unsignalled = 0  # events queued since the thread was last woken
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._write_queued, name="tiled-writer",
                                        daemon=True)
        self._thread.start()

    def _factory(self, name, doc):
        # every array goes to zarr: the SQLite table store takes no list columns
        writer = _RunWriter(self.client, batch_size=self._batch_size, max_array_size=0)
        self._writers[doc["uid"]] = writer
        return [writer], []

    def __call__(self, name, doc):
        self._raise_error()
        if self._closed:
            raise RuntimeError("this Tiled writer is closed")
        wait = name in ("start", "stop") or self._batch_size <= 1 \
            or len(self._queue) >= self.max_queued
        self._put(name, doc, wait=wait)

    def flush(self) -> None:
        """Write every queued document and every pending event of every open run now."""
        self._put(self._FLUSH, None, wait=True)

    def close(self) -> None:
        """Write what is queued (not the events a run's stop would write), stop the thread."""
        if not self._closed:
            self._closed = True
            self._put(self._CLOSE, None, wait=False)
        self._thread.join()

    def _put(self, name, doc, *, wait: bool) -> None:
        done = threading.Event() if wait else None
        self._queue.append((name, doc, done, time.monotonic()))
        self._unsignalled += 1
        if wait or name is self._CLOSE or self._unsignalled >= self._batch_size:
            self._unsignalled = 0
            self._wake.set()
        if done is not None:
            done.wait()
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    # -- the writing thread -------------------------------------------------------------------
    def _write_queued(self) -> None:
        tick_s = min(0.25, self.max_wait_s / 4)  # how long queued documents may wait unseen
        while True:
            since = self._pending_since
            due_s = tick_s if since is None else since + self.max_wait_s - time.monotonic()
            self._wake.wait(min(tick_s, max(due_s, 0.0)))
            self._wake.clear()
            while self._queue:
                name, doc, done, queued = self._queue.popleft()
                if name is self._CLOSE:
                    return
                if name is self._FLUSH:
                    self._attempt("pending events", self._write_pending)
                else:
                    self._attempt(f"a {name} document", self._write, name, doc, queued)
                if done is not None:
                    done.set()
            since = self._pending_since
            if since is not None and time.monotonic() - since >= self.max_wait_s:
                self._attempt("pending events", self._write_pending)

    def _attempt(self, what: str, write, *args) -> None:
        try:
            write(*args)
        except Exception as error:  # raised by the caller's next document
            logging.getLogger(__name__).exception("writing %s to Tiled failed", what)
            self._error = error

    def _write(self, name: str, doc: dict, queued: float) -> None:
        super().__call__(name, doc)
        if name == "stop":
            self._writers.pop(doc["run_start"], None)
        if name == "event" and self._pending_since is None:
            self._pending_since = queued
        if name in ("event", "stop") and not self._pending():
            self._pending_since = None

    def _pending(self) -> bool:
        return any(cache for writer in self._writers.values()
                   for cache in writer._internal_data_cache.values())

    def _write_pending(self) -> None:
        for writer in self._writers.values():
            for stream, cache in writer._internal_data_cache.items():
                if cache:  # as _RunWriter.stop writes its cache
                    writer._write_internal_data(cache, desc_node=writer._desc_nodes[stream])
                    cache.clear()
        self._pending_since = None
