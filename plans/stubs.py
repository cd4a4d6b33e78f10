"""Plan stubs of one survey cycle: scan and judge, condition the tip, recover. None opens a run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import bluesky.plan_stubs as bps
import numpy as np
from ophyd import Signal

from deepspm_bluesky.imaging import ImageCheck, ProcessedImage, process_image
from deepspm_bluesky.ml.evaluation import GOOD_TIP_THRESHOLD

from ..devices import STM


class DecisionSignals:
    """Soft signals that carry the plan's own decisions into the run as event data."""

    def __init__(self, **initial: object) -> None:
        self.signals = {key: Signal(name=key, value=value) for key, value in initial.items()}

    def read(self, **values: object):
        """Put `values` into the signals, then read all of them into the open event."""
        for key, value in values.items():
            self.signals[key].put(value)
        for signal in self.signals.values():
            yield from bps.read(signal)


@dataclass(frozen=True)
class Judgement:
    """What the plan concluded about one image: the fast pipeline, then the classifier."""

    processed: ProcessedImage
    p_good: float

    @property
    def check(self) -> ImageCheck:
        return self.processed.check

    @property
    def tip_good(self) -> bool:
        """Checks passed and the classifier gave P(good) >= 0.9."""
        return self.check.ok and self.p_good >= GOOD_TIP_THRESHOLD

    @property
    def verdict(self) -> str:
        """`good`/`bad` for a clean image, else the check that fired."""
        if not self.check.ok:
            return self.check.verdict
        return "good" if self.tip_good else "bad"


def judge(image: np.ndarray, stm: STM,
          classifier: Callable[[np.ndarray], float]) -> Judgement:
    """Fast checks first; the classifier only sees images that pass them (else P = NaN)."""
    processed = process_image(image, size_nm=stm.scanner.size_nm.get(),
                              z_range_m=stm.zctrl.z_range_nm.get() * 1e-9, actions=stm.actions)
    ok = processed.check.ok
    p_good = float(classifier(image)) if ok else math.nan
    return Judgement(processed, p_good)


def primary_signals() -> DecisionSignals:
    return DecisionSignals(check="", verdict="", p_good=math.nan, free_nm=math.nan)


def scan_image(stm: STM, decisions: DecisionSignals,
               classifier: Callable[[np.ndarray], float]):
    """Scan, judge and record one image with its verdict as one `primary` event."""
    yield from bps.trigger(stm, wait=True)
    yield from bps.create("primary")
    reading = yield from bps.read(stm)
    image = reading[stm.image.name]["value"]
    judgement = judge(image, stm, classifier)
    yield from decisions.read(check=judgement.check.verdict, verdict=judgement.verdict,
                              p_good=judgement.p_good,
                              free_nm=judgement.processed.square.size_nm)
    yield from bps.save()
    return image, judgement


def action_signals() -> DecisionSignals:
    return DecisionSignals(action="", action_index=-1, x_nm=math.nan, y_nm=math.nan, reason="")


def condition_tip(stm: STM, action_name: str, decisions: DecisionSignals, *, reason: str,
                  x_nm: float | None = None, y_nm: float | None = None):
    """Run one conditioning action at (x, y) nm (default: the scanner's centre), record it."""
    x_nm = stm.scanner.x_nm.get() if x_nm is None else x_nm
    y_nm = stm.scanner.y_nm.get() if y_nm is None else y_nm
    yield from bps.mv(stm.conditioner, (action_name, x_nm, y_nm))
    yield from record_action(decisions, action_name, stm.actions.index(action_name),
                             x_nm=x_nm, y_nm=y_nm, reason=reason)


def record_action(decisions: DecisionSignals, name: str, index: int, *, x_nm: float,
                  y_nm: float, reason: str):
    """One `actions` event: what was done, where, and why."""
    yield from bps.create("actions")
    yield from decisions.read(action=name, action_index=index, x_nm=x_nm, y_nm=y_nm,
                              reason=reason)
    yield from bps.save()


def recover(stm: STM, check: ImageCheck, decisions: DecisionSignals):
    """Crash: heavy tip clean. Lost contact: approach. Recorded as actions with index -1."""
    command = {"crash": "clean", "no_contact": "approach"}.get(check.verdict)
    if command is not None:
        yield from bps.mv(stm.zctrl, command)
        yield from record_action(decisions, command, -1, x_nm=stm.scanner.x_nm.get(),
                                 y_nm=stm.scanner.y_nm.get(), reason=check.verdict)
