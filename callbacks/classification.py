"""Live tip classification: P(good tip) for every image event of any run, kept as a table.

>>> RE(count([stm], 10), LiveTipClassification())       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from bluesky.callbacks.core import CallbackBase

from deepspm_bluesky.judging import GOOD_TIP_THRESHOLD, judge, tip_is_good

logger = logging.getLogger(__name__)

IMAGE_SUFFIX = "_image"
Z_RANGE_SUFFIX = "z_range_nm"
HEADER = f"{'run':8s} {'stream':10s} {'seq':>5s} {'image':14s} {'check':10s} {'P(good)':>8s}  tip"


@dataclass(frozen=True)
class TipClassificationRow:
    """One classified image: where it came from and what was found.

    `check` is the verdict of the fast checks ("ok", "crash", "no_contact", "debris"; "" when
    they could not run); `p_good` is NaN when the classifier did not run (failed checks,
    error); `tip` is "good", "bad", or "" when there is no verdict; `error` says what went
    wrong, if anything.
    """

    run_uid: str
    stream: str
    seq_num: int
    key: str
    check: str
    p_good: float
    tip: str
    error: str = ""

    def line(self) -> str:
        p = "" if math.isnan(self.p_good) else f"{self.p_good:.3f}"
        text = (f"{self.run_uid[:8]:8s} {self.stream:10s} {self.seq_num:5d} {self.key:14s} "
                f"{self.check:10s} {p:>8s}  {self.tip}")
        return text + (f"  ({self.error})" if self.error else "")


def _load_pretrained() -> Callable[[np.ndarray], float]:
    from deepspm_bluesky.ml import TipClassifier

    return TipClassifier.pretrained()


class LiveTipClassification(CallbackBase):
    """Classify each image in each event of any run; keep the results in `rows`.

    An image is any data key ending in ``_image`` whose descriptor gives a 2-D shape (e.g.
    ``stm_image``). The fast checks of the pipeline run first when the device's z range is
    in the descriptor's configuration; the classifier only sees images that pass them. This
    callback never raises into the run: a failure becomes a row with its `error`, and a log
    message.

    Parameters
    ----------
    classifier
        Callable from a raw image (metres) to P(good tip); default: the shipped
        `TipClassifier.pretrained()`, loaded when the callback is made.
    threshold
        P(good) at or above which the tip counts as good (DeepSPM: 0.9).
    out
        Where to print a line per image (default `print`); None prints nothing.

    Examples
    --------
    >>> from bluesky.plans import count
    >>> live = LiveTipClassification(out=None)
    >>> RE(count([stm], 5), live)                          # doctest: +SKIP
    >>> [row.tip for row in live.rows]                     # doctest: +SKIP
    ['good', 'good', 'good', 'good', 'good']
    """

    def __init__(self, classifier: Callable[[np.ndarray], float] | None = None, *,
                 threshold: float = GOOD_TIP_THRESHOLD,
                 out: Callable[[str], None] | None = print) -> None:
        super().__init__()
        self.classifier = _load_pretrained() if classifier is None else classifier
        self.threshold = threshold
        self.out = out
        self.rows: list[TipClassificationRow] = []
        self._run_uid = ""
        self._streams: dict[str, tuple[str, list[str], float | None]] = {}

    # -- documents -------------------------------------------------------------------------
    def start(self, doc):
        self._guarded(self._start, doc)

    def descriptor(self, doc):
        self._guarded(self._descriptor, doc)

    def event(self, doc):
        self._guarded(self._event, doc)

    # -- results ---------------------------------------------------------------------------
    def table(self) -> str:
        """All rows so far as text, with a header."""
        return "\n".join([HEADER, *(row.line() for row in self.rows)])

    def to_records(self) -> list[dict]:
        """All rows as dicts (e.g. for ``pandas.DataFrame(live.to_records())``)."""
        return [asdict(row) for row in self.rows]

    # -- internals -------------------------------------------------------------------------
    def _guarded(self, method: Callable[[dict], None], doc: dict) -> None:
        try:
            method(doc)
        except Exception:  # a callback must never crash the run
            logger.exception("LiveTipClassification failed on a document; the run goes on")

    def _start(self, doc: dict) -> None:
        self._run_uid = doc["uid"]
        self._streams.clear()
        if self.out is not None:
            self.out(HEADER)

    def _descriptor(self, doc: dict) -> None:
        keys = [key for key, info in doc["data_keys"].items()
                if key.endswith(IMAGE_SUFFIX) and len(info.get("shape") or ()) == 2]
        if keys:
            self._streams[doc["uid"]] = (doc.get("name", ""), keys, _z_range_m(doc))

    def _event(self, doc: dict) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream is None:
            return
        name, keys, z_range_m = stream
        for key in keys:
            row = self._classify(doc, name, key, z_range_m)
            self.rows.append(row)
            if self.out is not None:
                self.out(row.line())

    def _classify(self, doc: dict, stream: str, key: str,
                  z_range_m: float | None) -> TipClassificationRow:
        def row(check: str = "", p_good: float = math.nan, tip: str = "",
                error: str = "") -> TipClassificationRow:
            return TipClassificationRow(self._run_uid, stream, int(doc.get("seq_num", 0)), key,
                                        check, p_good, tip, error)

        if key not in doc["data"] or doc.get("filled", {}).get(key, True) is not True:
            return row(error="image not in the event (external, not filled)")
        try:
            image = np.asarray(doc["data"][key], dtype=np.float64)
            judgement = judge(image, self.classifier, z_range_m=z_range_m)
        except Exception as error:  # bad image or classifier failure: record, never raise
            logger.warning("tip classification of %s #%s failed: %s", key,
                           doc.get("seq_num"), error)
            return row(error=f"{type(error).__name__}: {error}")
        if judgement.check not in ("", "ok"):
            return row(check=judgement.check)  # the checks decide; no classifier verdict
        tip = "good" if tip_is_good(judgement.p_good, self.threshold) else "bad"
        return row(check=judgement.check, p_good=judgement.p_good, tip=tip)


def _z_range_m(descriptor: dict) -> float | None:
    """The z piezo range (metres) from any device configuration in the descriptor."""
    for config in descriptor.get("configuration", {}).values():
        for key, value in config.get("data", {}).items():
            if key.endswith(Z_RANGE_SUFFIX) and isinstance(value, (int, float)) and value > 0:
                return float(value) * 1e-9
    return None
