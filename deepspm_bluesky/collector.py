"""Python's garbage collector kept out of the way of long-running commands.

A full collection walks every object alive, and a survey's or the watch page's process holds
about 600 000 made once by its imports (torch, Tiled, pandas, matplotlib): in the watch
page each full collection took 180-680 ms, a few times a minute while a survey was written,
and answered no viewer meanwhile. So a command sets up with the collector off (its imports
alone had triggered about 2 s of them), then `settle` collects once and freezes what is
alive out of later collections, which see only what came after (23-42 ms each).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def setting_up() -> Iterator[None]:
    """The collector off while a command imports and builds what it keeps: until `settle`,
    or the end of the block however it ends."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def settle() -> None:
    """Collect once, freeze every object alive now, and turn the collector back on."""
    gc.collect()
    gc.freeze()
    gc.enable()
