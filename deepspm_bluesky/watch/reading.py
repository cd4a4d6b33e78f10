"""What the watch page shows, read from Tiled by one reader shared by all viewers.

Viewers never wait for Tiled: a request that finds the newest survey's snapshot older than
`refresh_s` wakes the reader's one looking thread and is answered with the current snapshot
(only the very first request, with nothing to show yet, waits); no one watching, no look.
A look costs two requests (the newest run, its image count); the run's tables are read
again only when those changed, through nodes looked up once per run, and the latest image
is rendered then, before any viewer asks for it. Only a few scalar columns are read, never
the image stack.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict

import pandas as pd
from tiled.client.container import Container

from deepspm_bluesky.actions import load_actions

from .corrections import corrections_of, review_image
from .images import image_png
from .snapshot import (
    ACTION_COLUMNS,
    OUTAGE_COLUMNS,
    PRIMARY_COLUMNS,
    build_snapshot,
    empty_snapshot,
    image_item,
    run_summary,
)

PNG_CACHE = 256  # rendered images kept (a PNG of 64 x 64 pixels is ~6 kB)
RUNS_KEPT = 8  # runs whose nodes are kept looked up
TABLES_KEPT = 4  # judgement tables kept for the gallery
LOOK_TIMEOUT_S = 30.0  # closing waits this long for a look under way (a served Tiled's timeout)


class CatalogReader:
    """Reads what the watch page shows from a Tiled client, shared by all its viewers.

    Parameters
    ----------
    client
        A Tiled client of a catalog of Bluesky runs (`deepspm_bluesky.data.open_catalog`).
    refresh_s
        Look for new data at most this often (and only while someone asks).
    """

    def __init__(self, client, *, refresh_s: float = 1.0) -> None:
        self.client = client
        self.refresh_s = float(refresh_s)
        self._tiled = threading.RLock()  # one Tiled request at a time (in-process transport)
        self._state = threading.Lock()  # the caches and the looking thread; held briefly
        self._wanted = threading.Event()  # a viewer found the snapshot stale
        self._looked = threading.Event()  # set once the first look ended
        self._looker: threading.Thread | None = None
        self._closed = False
        self._checked = -math.inf  # when the last look ended (inf during a look)
        self._key: tuple | None = None
        self._snapshot: dict = empty_snapshot()
        self._runs: OrderedDict[str, RunNodes] = OrderedDict()
        self._pngs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._tables: OrderedDict[tuple[str, int], pd.DataFrame] = OrderedDict()
        self._radius_nm = {action.name: action.forbid_radius_nm for action in load_actions()}

    # -- the newest survey ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether a first look has ended: `survey` returns at once from then on."""
        return self._looked.is_set()

    def survey(self) -> dict:
        """The newest run's snapshot (`build_snapshot`), about `refresh_s` old at most.

        Never waits for Tiled but before the first look: a stale snapshot wakes the looking
        thread, and this call returns the current one.
        """
        if time.monotonic() - self._checked >= self.refresh_s:
            self._wanted.set()
            if self._looker is None:
                self._start_looking()
        self._looked.wait()
        return self._snapshot

    def close(self) -> None:
        """Stop the looking thread (waiting for a look under way): the page is shutting down,
        and the Tiled client it reads may be closed next."""
        with self._state:
            self._closed, looker = True, self._looker
        self._wanted.set()
        if looker is not None:
            looker.join(LOOK_TIMEOUT_S)
        self._looked.set()  # a viewer still waiting gets the last snapshot

    def _start_looking(self) -> None:
        with self._state:
            if self._looker is None and not self._closed:
                self._looker = threading.Thread(target=self._look_when_wanted,
                                                name="watch-look", daemon=True)
                self._looker.start()

    def _look_when_wanted(self) -> None:
        """The looking thread: one look each time a viewer found the snapshot stale."""
        failing = False
        while True:
            self._wanted.wait()
            if self._closed:
                return
            self._checked = math.inf  # viewers meanwhile do not ask again
            self._wanted.clear()
            failing = self._look(failing)
            self._checked = time.monotonic()
            self._looked.set()

    def _look(self, failing: bool) -> bool:
        """One look at the catalog; whether it failed (the last snapshot then stays).

        The first failure is logged with its traceback, the next ones in one line each
        until a look succeeds (an unreachable Tiled is not a traceback a second).
        """
        try:
            with self._tiled:
                self._refresh()
            return False
        except Exception as error:
            log = logging.getLogger(__name__)
            if failing:
                log.warning("reading the catalog failed again: %s: %s", type(error).__name__,
                            error)
            else:
                log.exception("reading the catalog failed")
            return True

    def _refresh(self) -> None:
        """Read the newest run again if its images, end or reviews changed (Tiled locked)."""
        try:
            run = self.client.values()[-1]
        except IndexError:
            self._key, self._snapshot = None, empty_snapshot()
            return
        metadata = run.metadata
        nodes = self._nodes(metadata["start"]["uid"], run)
        images, n = nodes.images()
        key = (nodes.uid, n, "stop" in metadata, len(corrections_of(metadata)))
        if key == self._key:
            return
        snapshot = build_snapshot(
            metadata, nodes.read("primary", PRIMARY_COLUMNS)[:n],
            nodes.read("actions", ACTION_COLUMNS), nodes.read("outages", OUTAGE_COLUMNS),
            frame_nm=nodes.frame_nm(), radius_nm=self._radius_nm)
        latest = snapshot["status"]["images"] - 1  # the table may lag the image stack ...
        if latest >= 0 and self.cached_png(nodes.uid, latest) is None:  # rendered before
            self._keep(self._pngs, (nodes.uid, latest), image_png(images[latest]), PNG_CACHE)
        # ... and is then read again at the next look, even if nothing else changed
        self._snapshot, self._key = snapshot, (key if latest == n - 1 else None)

    # -- any run ----------------------------------------------------------------------------
    def runs(self, limit: int = 20) -> list[dict]:
        """The newest `limit` runs, newest first: uid, time, mode, images, end, corrections."""
        with self._tiled:
            return [run_summary(run.metadata)
                    for run in reversed(self.client.values().tail(limit))]

    def image_page(self, uid: str, offset: int, limit: int) -> dict:
        """Images `offset` to `offset + limit` of a run (newest first when offset counts back).

        Returns ``{"uid", "images": n, "items": [{index, verdict, p_good, check, review}]}``
        for the indices ``n - 1 - offset`` downwards.
        """
        with self._tiled:
            nodes = self._nodes(uid, run_node(self.client, uid))  # its reviews as they are now
            n = nodes.images()[1]
            table = self._judgements(nodes, n)
            corrections = corrections_of(nodes.run.metadata)
        stop = max(n - offset, 0)
        indices = range(stop - 1, max(stop - limit, 0) - 1, -1)
        return {"uid": uid, "images": n,
                "items": [image_item(table, index, corrections) for index in indices]}

    def cached_png(self, uid: str, index: int) -> bytes | None:
        """Image `index` of run `uid` if rendered already (the latest always is), else None."""
        key = (uid, index)
        with self._state:
            if key in self._pngs:
                self._pngs.move_to_end(key)
            return self._pngs.get(key)

    def png(self, uid: str, index: int) -> bytes:
        """Image `index` of run `uid`, levelled and rendered (cached; rendered unlocked)."""
        cached = self.cached_png(uid, index)
        if cached is not None:
            return cached
        with self._tiled:
            images, n = self._nodes(uid).images()
            if not 0 <= index < n:
                raise IndexError(f"run {uid[:8]} has {n} images; no image {index}")
            raw = images[index]
        data = image_png(raw)
        self._keep(self._pngs, (uid, index), data, PNG_CACHE)
        return data

    def review(self, uid: str, index: int, review: str) -> dict:
        """Store a person's review of image `index` of run `uid` (`review_image`), and look
        at the catalog again at once, so the next poll shows it."""
        with self._tiled:
            entry = review_image(run_node(self.client, uid), index, review)  # reviews as now
            self._refresh()
            return entry

    def _nodes(self, uid: str, run=None) -> RunNodes:
        """Run `uid`'s nodes, looked up once (`run`: its node, when already at hand)."""
        with self._state:
            nodes = self._runs.get(uid)
        if nodes is None:
            nodes = RunNodes(self.client, run if run is not None else run_node(self.client, uid))
            self._keep(self._runs, uid, nodes, RUNS_KEPT)
        elif run is not None:
            nodes.run = run  # fresher metadata
        return nodes

    def _judgements(self, nodes: RunNodes, n: int) -> pd.DataFrame:
        """Verdict, P(good) and check of a run's first `n` images (kept per run and count)."""
        key = (nodes.uid, n)
        with self._state:
            table = self._tables.get(key)
        if table is None:
            table = nodes.read("primary", ("verdict", "p_good", "check"))[:n]
            self._keep(self._tables, key, table, TABLES_KEPT)
        return table

    def _keep(self, cache: OrderedDict, key, value, size: int) -> None:
        """Put `value` in an LRU `cache` of `size` entries."""
        with self._state:
            cache[key] = value
            cache.move_to_end(key)
            if len(cache) > size:
                cache.popitem(last=False)


class RunNodes:
    """The Tiled nodes of one run that the page reads again and again, each looked up once.

    A node's data are read afresh each time; a stream not there yet (``actions`` before the
    first action) is looked for again at the next read.
    """

    def __init__(self, client, run) -> None:
        self.client, self.run = client, run
        start = run.metadata["start"]
        self.uid, self.prefix = start["uid"], device_prefix(start)
        self._tables: dict[str, object] = {}
        self._image_key: str | None = None
        self._frame_nm: float | None = None
        self._frame_looked = False

    def images(self) -> tuple[object | None, int]:
        """The run's image stack as it is now and its length (one request); (None, 0)
        before the first image."""
        try:
            if self._image_key is None:
                self._image_key = image_key(node_at(self.client, self.uid, "primary"))
            stack = node_at(self.client, self.uid, "primary", self._image_key)
        except KeyError:  # no primary stream or no image yet
            return None, 0
        return stack, int(stack.shape[0])

    def read(self, stream: str, names: tuple[str, ...]) -> pd.DataFrame:
        """The named columns of a stream's table (device ones without the prefix); an empty
        table with those columns while the run has no such stream."""
        table = self._table(stream)
        if table is None:
            return pd.DataFrame(columns=list(names))
        present = set(table.columns)
        wanted = {name: (name if name in present else self.prefix + name) for name in names}
        frame = table.read([column for column in wanted.values() if column in present])
        return frame.rename(columns={column: name for name, column in wanted.items()})

    def frame_nm(self) -> float | None:
        """The frame side recorded in the primary stream's configuration, if any."""
        if not self._frame_looked and "primary" in self._tables:
            self._frame_nm = frame_size_nm(node_at(self.client, self.uid, "primary"))
            self._frame_looked = True
        return self._frame_nm

    def _table(self, stream: str):
        if stream not in self._tables:
            try:
                self._tables[stream] = node_at(self.client, self.uid, stream, "internal")
            except KeyError:
                return None
        return self._tables[stream]


def run_node(client, uid: str):
    """The run `uid` of the catalog, or KeyError naming it."""
    try:
        return client[uid]
    except (KeyError, ValueError):
        raise KeyError(f"no run {uid!r} in the catalog") from None


def image_key(stream) -> str:
    """The key of a stream's stack of 2-D images (its one array of three dimensions)."""
    for key in stream.base:
        if key != "internal" and len(stream.base[key].shape) == 3:
            return key
    raise KeyError("the stream records no image stack")


def node_at(client, *path: str):
    """The node at ``client/path[0]/path[1]/...`` in one request (Tiled's own path lookup;
    the catalog's ``[]`` would take a joined path for a partial uid)."""
    return Container.__getitem__(client, "/".join(path))


def device_prefix(start: dict) -> str:
    """``"stm_"`` for data keys such as ``stm_scanner_x_nm`` (the run's first detector)."""
    detectors = start.get("detectors") or ["stm"]
    return f"{detectors[0]}_"


def frame_size_nm(stream) -> float | None:
    """The frame side recorded in a stream's configuration, if any."""
    configuration = stream.metadata.get("configuration") or {}
    for device in configuration.values():
        for key, value in (device.get("data") or {}).items():
            if key.endswith("scanner_size_nm"):
                return float(value)
    return None
