"""Tip classifier inference, batch of one 64-px image: the shipped network vs the paper's CNN.

Times the network alone (normalised input) and the whole call on a raw height image
(flatten, normalise, network), with 1 and 2 torch threads; then what knowing whether the image
is familiar adds (`TipClassifier.familiar`, shipped weights), and a 256-px frame brought to the
network input (`network_input`) against a 64-px one. Goal: <= 5 ms for the default.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from benchmarks.timing import per_call_s, report
from deepspm_bluesky.ml import TipClassifier
from deepspm_bluesky.ml.preprocessing import network_input, preprocess
from deepspm_bluesky.sim import SimulatedMicroscope

GOAL_S = 5e-3


def _network_call(classifier: TipClassifier, normalised: np.ndarray):
    batch = torch.from_numpy(normalised).reshape(1, 1, 64, 64)

    def call() -> None:
        with torch.inference_mode():
            classifier.network(batch)

    return call


def main() -> None:
    raw = SimulatedMicroscope(seed=1).scan(0.0, 0.0, 10e-9, 64)
    shipped, paper = TipClassifier.pretrained(), TipClassifier("deepspm")
    name = shipped.architecture
    normalised = preprocess(raw)
    threads = torch.get_num_threads()
    print(f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            ours = per_call_s(_network_call(shipped, normalised), repeat=200)
            theirs = per_call_s(_network_call(paper, normalised), repeat=10)
            report(f"network only, {n} thread(s), {name}", ours, theirs, "paper CNN")
            full = per_call_s(lambda: shipped(raw), repeat=100)
            full_paper = per_call_s(lambda: paper(raw), repeat=10)
            report(f"raw image -> P(good), {n} thread(s), {name}", full, full_paper,
                   "paper CNN")
            verdict = "meets" if full <= GOAL_S else "MISSES"
            print(f"  {name} {verdict} the {GOAL_S * 1e3:.0f} ms goal ({full * 1e3:.2f} ms)")
        familiar = per_call_s(lambda: shipped.familiar(normalised, normalized=True), repeat=100)
        predict = per_call_s(lambda: shipped.predict(normalised, normalized=True), repeat=100)
        report("familiar(image), shipped weights", familiar, predict, "predict(image)")
        both = per_call_s(lambda: shipped.predict_familiar(normalised, normalized=True),
                          repeat=100)
        report("predict_familiar(image)", both, predict + familiar, "predict + familiar")
        large = SimulatedMicroscope(seed=1).scan(0.0, 0.0, 10e-9, 256)
        report("network_input of a 256-px frame", per_call_s(
            lambda: network_input(large, pixel_nm=10 / 256), repeat=20),
            per_call_s(lambda: network_input(raw, pixel_nm=10 / 64), repeat=100),
            "a 64-px frame")
    finally:
        torch.set_num_threads(threads)
