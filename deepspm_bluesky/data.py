"""Tiled is the store: an embedded catalog in a directory by default, or a served one."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from bluesky_tiled_plugins import TiledWriter
from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import Context, from_context, from_uri
from tiled.server.app import build_app

ENV_VAR = "DEEPSPM_CATALOG"
WRITE_BATCH = 10  # events per flush: ~100 ev/s into an embedded catalog (see stack notes)


def default_catalog() -> str:
    """`$DEEPSPM_CATALOG`, else a `catalog` folder in the per-user data directory."""
    return os.environ.get(ENV_VAR) or str(
        Path(platformdirs.user_data_dir("deepspm-bluesky")) / "catalog"
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
    directory = Path(location).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"catalog location {directory} is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    adapter = catalog_from_uri(
        f"sqlite:///{directory / 'catalog.db'}",
        init_if_not_exists=True,
        writable_storage=[str(directory / "data"), f"sqlite:///{directory / 'tables.db'}"],
    )
    return from_context(Context.from_app(build_app(adapter)))


def tiled_writer(client, *, batch_size: int = WRITE_BATCH) -> TiledWriter:
    """A bluesky-tiled-plugins `TiledWriter` that streams runs into `client`."""
    return TiledWriter(client, batch_size=batch_size)
