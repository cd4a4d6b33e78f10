"""Tiled is the store: an embedded catalog in a directory by default, or a served one."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import platformdirs
from bluesky_tiled_plugins import TiledWriter
from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import Context, from_context, from_uri
from tiled.config import Authentication
from tiled.server.app import build_app

ENV_VAR = "DEEPSPM_CATALOG"
SIM_WRITE_BATCH = 10  # events per flush for the simulator: ~100 ev/s into an embedded catalog
INSTRUMENT_WRITE_BATCH = 1  # a flush (~75 ms) is small beside a real scan: show each image now
# The root is a catalog of Bluesky runs, so the client offers catalog[-1], scan ids, search.
ROOT_SPECS = [{"name": "CatalogOfBlueskyRuns", "version": "3.0"}]


def default_catalog() -> str:
    """`$DEEPSPM_CATALOG`, else a `catalog` folder in the per-user data directory."""
    return os.environ.get(ENV_VAR) or str(
        Path(platformdirs.user_data_dir("deepspm-bluesky")) / "catalog"
    )


def catalog_adapter(directory: str | os.PathLike):
    """The Tiled adapter of a catalog directory: SQLite metadata, zarr arrays, SQL tables."""
    directory = Path(directory).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"catalog location {directory} is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return catalog_from_uri(
        f"sqlite:///{directory / 'catalog.db'}",
        init_if_not_exists=True,
        specs=ROOT_SPECS,
        writable_storage=[str(directory / "data"), f"sqlite:///{directory / 'tables.db'}"],
    )


def open_catalog(path_or_uri: str | os.PathLike | None = None, *, api_key: str | None = None):
    """The Tiled client of a catalog directory (created if new) or of a served Tiled URI.

    Parameters
    ----------
    path_or_uri
        A directory (embedded: SQLite + array files, no server) or ``http(s)://...``;
        None uses `default_catalog()`.
    api_key
        API key of a served Tiled.
    """
    location = str(path_or_uri) if path_or_uri is not None else default_catalog()
    if location.startswith(("http://", "https://")):
        return from_uri(location, api_key=api_key)
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)  # no version banner
    with warnings.catch_warnings():  # tiled's in-process transport warns about its own httpx use
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        return from_context(Context.from_app(build_app(catalog_adapter(location))))


def serve_catalog(directory: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                  api_key: str) -> None:
    """Serve a catalog directory over HTTP (blocks); clients need `api_key`."""
    import uvicorn

    if not api_key or not api_key.isalnum():
        raise ValueError("the API key must be non-empty and only letters and digits "
                         "(Tiled's rule: it may travel in a URL)")
    app = build_app(catalog_adapter(directory), Authentication(single_user_api_key=api_key))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def batch_size_for(backend: str) -> int:
    """Events per flush for a backend name: batched for `sim`, one by one for instruments."""
    return SIM_WRITE_BATCH if backend == "sim" else INSTRUMENT_WRITE_BATCH


def tiled_writer(client, *, batch_size: int = SIM_WRITE_BATCH) -> TiledWriter:
    """A bluesky-tiled-plugins `TiledWriter` that streams runs into `client`.

    Events are written `batch_size` at a time (and all at the end of a run); see
    `batch_size_for`: a real microscope writes each image as it lands.
    """
    return TiledWriter(client, batch_size=batch_size)
