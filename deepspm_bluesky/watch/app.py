"""The watch page: a small FastAPI app over a Tiled catalog, everything it serves shipped here.

``GET /`` is the page (``static/``: hand-written HTML, CSS and JavaScript, no build step, no
CDN); it polls ``/api/status`` and fetches the rest when the survey changed. The API:

- ``GET /api/status``: the newest survey's state (uid, images, good fraction, latest verdict,
  last event time), for other dashboards too;
- ``GET /api/survey``: what the page draws of the newest survey;
- ``GET /api/runs``: past surveys, newest first;
- ``GET /api/runs/{uid}/images?offset=&limit=``: a run's verdicts, newest first;
- ``GET /api/runs/{uid}/images/{index}.png``: one image, levelled;
- ``POST /api/runs/{uid}/images/{index}/review`` with ``{"review": "wrong"|"right"}``.

What every viewer asks each second (status, snapshot, the latest image) is answered on the
event loop from what the reader holds, without a thread hop; what reads Tiled runs in the
thread pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from deepspm_bluesky.collector import settle

from .corrections import REVIEWS
from .reading import CatalogReader

STATIC = Path(__file__).with_name("static")
M_ARENA_MAX = -8  # mallopt parameter of glibc's malloc.h


class JSON(Response):
    """JSON by orjson: numpy scalars as numbers, NaN as null, and no pydantic pass."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS)


def create_app(client, *, title: str = "", refresh_s: float = 1.0) -> FastAPI:
    """The watch app over a Tiled client.

    Parameters
    ----------
    client
        Tiled client of the catalog (`deepspm_bluesky.data.open_catalog`); it holds any API
        key, which the page never sees.
    title
        What the page calls the catalog (a folder or a URI without credentials).
    refresh_s
        Look for new data in Tiled at most this often, whatever the number of viewers.
    """
    reader = CatalogReader(client, refresh_s=refresh_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(reader.close)  # before whoever owns `client` closes it

    app = FastAPI(title="deepspm-bluesky watch", docs_url=None, redoc_url=None,
                  default_response_class=JSON, lifespan=lifespan)
    app.state.reader = reader
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def snapshot() -> dict:
        """The reader's snapshot; only the first, read from Tiled, is awaited off the loop."""
        return reader.survey() if reader.ready else await run_in_threadpool(reader.survey)

    @app.get("/api/status")
    async def status() -> JSON:
        return JSON({**(await snapshot())["status"], "catalog": title})

    @app.get("/api/survey")
    async def survey() -> JSON:
        return JSON({**(await snapshot()), "catalog": title, "server_time": time.time()})

    @app.get("/api/runs")
    def runs(limit: int = Query(20, ge=1, le=200)) -> JSON:
        return JSON(reader.runs(limit))

    @app.get("/api/runs/{uid}/images")
    def images(uid: str, offset: int = Query(0, ge=0),
               limit: int = Query(24, ge=1, le=200)) -> JSON:
        try:
            return JSON(reader.image_page(uid, offset, limit))
        except KeyError as error:
            raise HTTPException(404, str(error.args[0])) from None

    @app.get("/api/runs/{uid}/images/{index}.png")
    async def image(uid: str, index: int) -> Response:
        try:
            data = reader.cached_png(uid, index) or await run_in_threadpool(reader.png, uid,
                                                                            index)
        except (KeyError, IndexError) as error:
            raise HTTPException(404, str(error.args[0])) from None
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})

    @app.post("/api/runs/{uid}/images/{index}/review")
    def review(uid: str, index: int, review: str = Body(..., embed=True)) -> JSON:
        if review not in REVIEWS:
            raise HTTPException(422, f"review must be one of {', '.join(REVIEWS)}")
        try:
            entry = reader.review(uid, index, review)
        except (KeyError, IndexError) as error:
            raise HTTPException(404, str(error.args[0])) from None
        except ValueError as error:
            raise HTTPException(409, str(error)) from None
        return JSON({"uid": uid, "index": index, **entry})

    return app


def serve_watch(client, *, host: str = "127.0.0.1", port: int = 8080, title: str = "",
                refresh_s: float = 1.0) -> None:
    """Serve the watch page (blocks until Ctrl-C).

    The page's process allocates Arrow memory (the tables read from Tiled) with the system
    allocator: Arrow's default, mimalloc, kept what each larger read of a growing survey's
    table had used (the process grew 54 MB over a 3 000-image survey, 20 MB with this).
    Its threads share two glibc malloc arenas (`few_malloc_arenas`). What is alive once the
    app is built is frozen out of the garbage collector
    (`deepspm_bluesky.collector`): each full collection had stopped every viewer's request
    for 180-680 ms, a few times a minute while a survey was written.
    """
    import pyarrow
    import uvicorn

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    few_malloc_arenas()
    app = create_app(client, title=title, refresh_s=refresh_s)
    settle()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def few_malloc_arenas(arenas: int = 2) -> None:
    """Have glibc's malloc give the threads created from now on `arenas` arenas in all.

    By default each thread that meets contention gets an arena of its own (up to eight per
    core), and memory freed in one is not reused by the others. While a 10 000-image survey
    was written (`bench_watch`, from a quarter of it to its end) the page grew 14 MB; 8 MB
    with this call, and 5 MB with ``MALLOC_ARENA_MAX=2`` set for the whole process (its
    first threads included). Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError, TypeError):
        pass
