"""torch inference as a survey runs it: one image at a time, on one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def inference(images: int) -> Iterator[None]:
    """torch inference; one image runs on one intra-op thread.

    A survey judges one image at a time: on the 2 busy cores of the test machine, two threads
    took 180 ms for one 64 x 64 image, one thread 15 ms (and the other core stays free for
    the live learner and the Tiled writer).
    """
    threads = torch.get_num_threads()
    if images == 1 and threads > 1:
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
