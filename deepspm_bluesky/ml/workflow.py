"""The `train-classifier` command: make data, train, evaluate on a held-out set, record.

Kept apart from the CLI so that scripts and tests call the same code as the command line.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .classifier import TipClassifier
from .data import LabelledImages, load_folder, simulated_dataset
from .evaluation import Evaluation, evaluate_scores, save_roc_plot
from .training import TrainingSettings, train_classifier

VALIDATION_SEED_OFFSET = 1  # simulated validation set: seed + 1
TEST_SEED_OFFSET = 1000  # held-out test set: a seed no training run of nearby seeds uses


FAMILIARITY_IMAGES = 4000  # training images the feature density is fitted on


@dataclass
class DataSizes:
    """Numbers of simulated images per set, and what they show.

    Attributes
    ----------
    train, validation, test
        Images per set.
    subtle_fraction
        Fraction of bad tips just past their visibility limit.
    families
        Surface families to simulate (`sim.FAMILIES`); None: the default sample at 10 nm.
    frame_nm
        (smallest, largest) frame side with `families`; None: 10 nm.
    """

    train: int = 16_000
    validation: int = 2_000
    test: int = 4_000
    subtle_fraction: float = 0.3
    families: tuple[str, ...] | None = None
    frame_nm: tuple[float, float] | None = None


def _simulated(n: int, seed: int, sizes: DataSizes, label: str,
               progress: bool) -> LabelledImages:
    with tqdm(total=n, desc=f"simulating {label} images", disable=not progress,
              unit="img") as bar:
        return simulated_dataset(n, seed=seed, subtle_fraction=sizes.subtle_fraction,
                                 progress=bar.update, families=sizes.families,
                                 frame_nm=sizes.frame_nm)


def make_datasets(seed: int, sizes: DataSizes, data_folder: str | Path | None = None, *,
                  progress: bool = True) -> dict[str, LabelledImages]:
    """Train, validation and test sets: simulated from `seed`, or split from a folder.

    Simulated sets use seeds `seed`, `seed + 1` and `seed + 1000` (the held-out test set).
    A folder of `good/` and `bad/` .npy files is split 70/15/15 at random (seeded).
    """
    if data_folder is not None:
        everything = load_folder(data_folder)
        rest, test = everything.split(0.15, seed=seed)
        train, validation = rest.split(0.15 / 0.85, seed=seed + VALIDATION_SEED_OFFSET)
        return {"train": train, "validation": validation, "test": test}
    return {
        "train": _simulated(sizes.train, seed, sizes, "training", progress),
        "validation": _simulated(sizes.validation, seed + VALIDATION_SEED_OFFSET, sizes,
                                 "validation", progress),
        "test": _simulated(sizes.test, seed + TEST_SEED_OFFSET, sizes, "test", progress),
    }


def evaluate_classifier(classifier: TipClassifier, data: LabelledImages) -> Evaluation:
    """Scores of `classifier` on a labelled set, at the classifier's threshold; accuracy by
    tip state, with subtle tips apart ("double (subtle)")."""
    scores = classifier.predict(data.images, normalized=True)
    return evaluate_scores(data.labels, scores, data.groups, threshold=classifier.threshold)


def machine_load() -> dict:
    """CPU count and 1/5/15-minute load averages, to say how busy the machine was."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "load_1_5_15_min": [round(x, 2) for x in load]}


def train_and_evaluate(
    output: str | Path,
    *,
    settings: TrainingSettings | None = None,
    sizes: DataSizes | None = None,
    data_folder: str | Path | None = None,
    fine_tune: bool = False,
    evaluate_only: bool = False,
    fit_familiarity: bool = False,
    roc_plot: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Train a classifier into `output` (or only evaluate it), print and record the scores.

    Parameters
    ----------
    output
        Checkpoint to write (the best model, updated during training); its record of seed,
        settings, timings and scores is written beside it with the suffix ``.json``.
    settings, sizes
        Training settings and simulated data sizes (defaults as in their classes).
    data_folder
        Train on a folder of `good/` and `bad/` .npy images instead of simulated ones.
    fine_tune
        Start from the shipped pretrained weights instead of from scratch.
    evaluate_only
        Load `output` (or the shipped weights if `output` does not exist) and only evaluate.
    fit_familiarity
        With `evaluate_only`: also fit the density of the training images' features
        (`TipClassifier.fit_familiarity`, on `FAMILIARITY_IMAGES` simulated training images
        and the validation set) and save the unchanged weights with it into `output`.
    roc_plot
        Where to save a ROC plot of the test set, if anywhere.
    progress, echo
        Progress bars on/off; where the report lines go.

    Returns
    -------
    dict
        The record written to the ``.json`` file.
    """
    settings, sizes, output = settings or TrainingSettings(), sizes or DataSizes(), Path(output)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        record = {"machine": {**machine_load(), "python": platform.python_version(),
                              "torch": str(torch.__version__)}}
        started = time.perf_counter()
        if evaluate_only:
            n_fit = FAMILIARITY_IMAGES if fit_familiarity else 2
            sizes = DataSizes(train=n_fit, validation=max(2, n_fit // 8), test=sizes.test,
                              subtle_fraction=sizes.subtle_fraction, families=sizes.families,
                              frame_nm=sizes.frame_nm)
        data = make_datasets(settings.seed, sizes, data_folder, progress=progress)
        record["data"] = _describe_data(data, settings.seed, sizes, data_folder,
                                        time.perf_counter() - started)
        if evaluate_only:
            classifier = (TipClassifier.load(output) if output.exists()
                          else TipClassifier.pretrained())
            echo(f"evaluating {output if output.exists() else 'the shipped weights'}")
            if fit_familiarity:
                classifier.fit_familiarity(data["train"].images, data["validation"].images)
        else:
            initial = TipClassifier.pretrained() if fine_tune else None
            result = train_classifier(data["train"], data["validation"], settings,
                                      checkpoint=output, initial=initial, progress=progress)
            classifier = result.classifier
            classifier.fit_familiarity(data["train"].images[:FAMILIARITY_IMAGES],
                                       data["validation"].images)
            record["training"] = {
                "settings": settings.as_dict(), "fine_tune": fine_tune,
                "steps": result.steps, "best_step": result.best_step,
                "best_validation_auc": result.best_validation_auc,
                "training_s": round(result.seconds, 1), "history": result.history,
            }
        evaluation = evaluate_classifier(classifier, data["test"])
        record["test"] = evaluation.as_dict()
        if classifier.familiarity is not None:
            flagged = float(np.mean(~classifier.familiar(data["test"].images, normalized=True)))
            record["test"]["unfamiliar_fraction"] = flagged
            echo(f"test images flagged unfamiliar: {flagged:.1%}")
        record["total_s"] = round(time.perf_counter() - started, 1)
        record["machine"]["load_after_1_5_15_min"] = machine_load()["load_1_5_15_min"]
        echo(evaluation.report())
        echo(f"total time {record['total_s']:.0f} s "
             f"(data {record['data']['seconds']:.0f} s) on {record['machine']['cpus']} CPUs, "
             f"load {record['machine']['load_1_5_15_min']} -> "
             f"{record['machine']['load_after_1_5_15_min']}")
        if roc_plot is not None:
            echo(f"ROC plot: {save_roc_plot(evaluation, roc_plot)}")
        if evaluate_only and fit_familiarity:
            classifier.metadata.update(familiarity_data=record["data"])
            classifier.save(output)
            echo(f"weights with their feature density: {output}")
        if not evaluate_only:
            classifier.metadata.update(test=evaluation.as_dict(), data=record["data"])
            classifier.save(output)
            output.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
            echo(f"weights: {output}; record: {output.with_suffix('.json')}")
        return record
    finally:
        torch.set_num_threads(threads)


def _describe_data(data: dict[str, LabelledImages], seed: int, sizes: DataSizes,
                   data_folder, seconds: float) -> dict:
    if data_folder is not None:
        source = {"folder": str(data_folder), "split_seed": seed}
    else:
        source = {"simulated": True, "train_seed": seed,
                  "validation_seed": seed + VALIDATION_SEED_OFFSET,
                  "test_seed": seed + TEST_SEED_OFFSET, "subtle_fraction": sizes.subtle_fraction,
                  "families": sizes.families, "frame_nm": sizes.frame_nm}
    return {**source, "sizes": {k: len(v) for k, v in data.items()},
            "seconds": round(seconds, 1)}
