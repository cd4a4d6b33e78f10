"""A progress bar for surveys: one tick per image, verdict counts beside it."""

from __future__ import annotations

from collections import Counter

from bluesky.callbacks.core import CallbackBase
from tqdm.auto import tqdm


class SurveyProgress(CallbackBase):
    """tqdm bar over a run's `primary` events; the postfix counts the verdicts so far.

    Works on any run; the total comes from the start document's ``num_points`` when given.
    """

    def __init__(self, **tqdm_options) -> None:
        super().__init__()
        self._tqdm_options = tqdm_options
        self.bar: tqdm | None = None
        self.verdicts: Counter[str] = Counter()
        self._primary: set[str] = set()

    def start(self, doc):
        self.verdicts.clear()
        self._primary.clear()
        self.bar = tqdm(total=doc.get("num_points"), unit="image", **self._tqdm_options)

    def descriptor(self, doc):
        if doc.get("name") == "primary":
            self._primary.add(doc["uid"])

    def event(self, doc):
        if self.bar is None or doc["descriptor"] not in self._primary:
            return
        verdict = doc["data"].get("verdict")
        if verdict:
            self.verdicts[verdict] += 1
            self.bar.set_postfix(self.verdicts, refresh=False)
        self.bar.update(1)

    def stop(self, doc):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
