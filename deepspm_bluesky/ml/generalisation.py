"""Leave-one-family-out evaluation: does the classifier judge the tip, not the surface?

For each surface family F of the simulator, a classifier is trained on every other family
and tested on F, a stand-in for a real sample it has never seen; the same classifier's
feature density (`ood`) should call F unfamiliar and the trained families familiar.

Run ``python -m deepspm_bluesky.ml.generalisation --help``: ``--processes N`` trains N rows
side by side (a many-core machine runs the whole table in minutes); with one process the rows
run in turn and each is written to ``--output`` as it finishes, the simulated sets are kept
in ``--cache`` (simulated once for every row and rerun) and each row's classifier in
``--checkpoints``. ``--read-out`` is the cheap
version for a CPU: the shipped classifier's features stay fixed and only a logistic
read-out of them is fitted per held-out family, which asks whether the simulator's tip
defects look alike on every surface rather than how well a retrained network generalises.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from deepspm_bluesky.sim import FAMILIES

from .classifier import TipClassifier
from .data import LabelledImages, simulated_dataset
from .evaluation import roc_auc
from .training import TrainingSettings, train_classifier
from .workflow import FAMILIARITY_IMAGES

ALL = "(all)"
QUANTILES = (0.95, 0.99, 0.999)  # thresholds of familiarity compared in each row


@dataclass
class FamilySets:
    """Training, validation and test images of one family."""

    train: LabelledImages
    validation: LabelledImages
    test: LabelledImages


def family_sets(family: str, *, n_train: int, n_test: int, seed: int,
                frame_nm: tuple[float, float] | None = None,
                cache: Path | None = None) -> FamilySets:
    """Simulated sets of one family (frames in its usual range unless `frame_nm` is given):
    seeds `seed`, `seed + 1` and `seed + 1000`; read from (or written to) `cache`, a
    folder of ``.npz`` files, if given."""
    def make(part: str, n: int, s: int) -> LabelledImages:
        name = f"{family}-{part}-n{n}-seed{s}-frame{frame_nm}.npz".replace(" ", "")
        if cache is not None and (cache / name).is_file():
            return LabelledImages.load(cache / name)
        data = simulated_dataset(n, seed=s, families=[family], frame_nm=frame_nm)
        if cache is not None:
            data.save(cache / name)
        return data
    return FamilySets(make("train", n_train, seed),
                      make("validation", max(2, n_train // 8), seed + 1),
                      make("test", n_test, seed + 1000))


def _concatenate(sets: Sequence[FamilySets], part: str) -> LabelledImages:
    return LabelledImages.concatenate([getattr(s, part) for s in sets])


def held_out_row(sets: dict[str, FamilySets], held_out: str,
                 settings: TrainingSettings, checkpoint: Path | None = None) -> dict:
    """Train without `held_out` (or on every family for `ALL`) and score; the classifier,
    with its feature density and the row in its metadata, is saved to `checkpoint`.

    Returns
    -------
    dict
        ROC-AUC and unfamiliar fraction on the held-out family's test images and on the
        trained families' test images, steps and seconds.
    """
    torch.set_num_threads(settings.threads)
    trained = [f for f in sets if f != held_out]
    train = _concatenate([sets[f] for f in trained], "train")
    validation = _concatenate([sets[f] for f in trained], "validation")
    result = train_classifier(train, validation, settings, progress=False)
    classifier = result.classifier
    rng = np.random.default_rng(settings.seed)
    some = rng.permutation(len(train))[:FAMILIARITY_IMAGES]  # every trained family
    classifier.fit_familiarity(train.images[some], validation.images)
    reference = classifier.unfamiliarity(validation.images, normalized=True)
    thresholds = {q: float(np.quantile(reference, q)) for q in QUANTILES}
    row = {"held_out": held_out, "steps": result.steps, "best_step": result.best_step,
           "seconds": round(result.seconds, 1),
           "validation_auc": {h["step"]: round(h["validation_auc"], 4) for h in result.history}}
    groups = {"trained": _concatenate([sets[f] for f in trained], "test")}
    if held_out != ALL:
        groups["held_out"] = sets[held_out].test
    for name, test in groups.items():
        scores = classifier.predict(test.images, normalized=True)
        row[f"auc_{name}"] = roc_auc(test.labels, scores)
        row[f"unfamiliar_{name}"] = float(np.mean(~classifier.familiar(test.images,
                                                                       normalized=True)))
        distance = classifier.unfamiliarity(test.images, normalized=True)
        row[f"unfamiliar_by_quantile_{name}"] = {
            str(q): float(np.mean(distance > t)) for q, t in thresholds.items()}
        good = test.labels == 1
        row[f"auc_by_state_{name}"] = {
            state: roc_auc(np.r_[test.labels[good], test.labels[test.states == state]],
                           np.r_[scores[good], scores[test.states == state]])
            for state in sorted(set(test.states[~good]))}
    if checkpoint is not None:
        classifier.metadata.update(lofo_row=row)
        classifier.save(checkpoint)
    return row


def leave_one_family_out(families: Sequence[str] = FAMILIES, *, n_train: int = 2000,
                         n_test: int = 500, seed: int = 0,
                         settings: TrainingSettings | None = None,
                         processes: int = 1, held_out: Sequence[str] | None = None,
                         cache: Path | None = None, checkpoints: Path | None = None,
                         on_row: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """One row per held-out family, then one for training on all of them (`ALL`).

    Parameters
    ----------
    families
        The families to simulate, train on and hold out.
    n_train, n_test, seed
        Images per family and seeds, as for `family_sets` (`cache`: where to keep them).
    settings
        Training settings of every row.
    processes
        Rows trained side by side (1: one after another in this process).
    held_out
        The rows to run (families, or `ALL`); default all families, then `ALL`.
    checkpoints
        Folder to save each row's classifier in, as ``<held out>.pt``.
    on_row
        Called with the rows so far after each one (sequential runs only), e.g. to save them.
    """
    settings = settings or TrainingSettings()
    sets = {f: family_sets(f, n_train=n_train, n_test=n_test, seed=seed, cache=cache)
            for f in families}
    jobs = [(sets, f, settings, None if checkpoints is None else checkpoints / f"{f}.pt")
            for f in (held_out or [*families, ALL])]
    if processes == 1 or settings.device != "cpu":  # one accelerator: one training at a time
        rows: list[dict] = []
        for job in jobs:
            rows.append(held_out_row(*job))
            if on_row is not None:
                on_row(rows)
        return rows
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(_row_args, jobs))


def _row_args(args) -> dict:
    return held_out_row(*args)


def read_out_rows(families: Sequence[str] = FAMILIES, *, n_train: int = 300,
                  n_test: int = 150, seed: int = 0,
                  classifier: TipClassifier | None = None) -> list[dict]:
    """Leave-one-family-out of a logistic read-out of `classifier`'s fixed features
    (`TipClassifier.features`; default: the shipped weights), one row per held-out family,
    then one for all families (`ALL`); test images from seed ``seed + 1000``."""
    classifier = classifier or TipClassifier.pretrained()
    features = {}
    for family in families:
        sets = family_sets(family, n_train=n_train, n_test=n_test, seed=seed)
        features[family] = {part: (classifier.features(d.images, normalized=True), d.labels)
                            for part, d in (("train", sets.train), ("test", sets.test))}
    rows = []
    for held_out in [*families, ALL]:
        trained = [f for f in families if f != held_out]
        x, y = (np.concatenate([features[f]["train"][i] for f in trained]) for i in (0, 1))
        score = _logistic_read_out(x, y)
        tx, ty = (np.concatenate([features[f]["test"][i] for f in trained]) for i in (0, 1))
        row = {"held_out": held_out, "auc_trained": roc_auc(ty, score(tx))}
        if held_out != ALL:
            hx, hy = features[held_out]["test"]
            row["auc_held_out"] = roc_auc(hy, score(hx))
        rows.append(row)
    return rows


def _logistic_read_out(x: np.ndarray, y: np.ndarray, l2: float = 1e-3):
    """A logistic regression on standardised features (L-BFGS); returns the scoring function."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    features = torch.tensor((x - mean) / std, dtype=torch.float64)
    labels = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ w + b, labels)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    w, b = w.detach().numpy(), float(b.detach())
    return lambda z: ((z - mean) / std) @ w + b


def table(rows: list[dict]) -> str:
    """A Markdown table of `leave_one_family_out` rows."""
    lines = ["| held-out family | ROC-AUC held out | ROC-AUC trained families "
             "| unfamiliar held out | unfamiliar trained | steps |",
             "|---|---|---|---|---|---|"]
    def cell(row: dict, key: str, spec: str) -> str:
        return "-" if row.get(key) is None else format(row[key], spec)

    for row in rows:
        lines.append(
            f"| {row['held_out']} | {cell(row, 'auc_held_out', '.4f')} "
            f"| {row['auc_trained']:.4f} | {cell(row, 'unfamiliar_held_out', '.1%')} "
            f"| {cell(row, 'unfamiliar_trained', '.1%')} | {cell(row, 'steps', 'd')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-family", type=int, default=2000)
    parser.add_argument("--test-per-family", type=int, default=500)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=TrainingSettings.batch_size)
    parser.add_argument("--architecture", default=TrainingSettings.architecture)
    parser.add_argument("--eval-every", type=int, default=TrainingSettings.eval_every)
    parser.add_argument("--learning-rate", type=float, default=TrainingSettings.learning_rate)
    parser.add_argument("--no-rotations", action="store_true",
                        help="flips only, no 90-degree turns (streaks and bands of an unstable "
                             "or contaminated tip run along the scan lines)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds of training per row at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device of the trainings")
    parser.add_argument("--held-out", action="append", default=None, choices=[*FAMILIES, ALL],
                        help="run only this row (repeatable); default: every family, then all")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder to keep the simulated sets in (.npz), to simulate once")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder to save each row's classifier in (<held out>.pt)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file of the rows, written after each row")
    parser.add_argument("--read-out", action="store_true",
                        help="only fit a logistic read-out of the shipped classifier's features")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.read_out:
        rows = read_out_rows(FAMILIES, n_train=args.train_per_family,
                             n_test=args.test_per_family, seed=args.seed)
    else:
        settings = replace(TrainingSettings(), seed=args.seed, max_steps=args.steps,
                           batch_size=args.batch_size, architecture=args.architecture,
                           eval_every=args.eval_every, learning_rate=args.learning_rate,
                           rotations=not args.no_rotations,
                           time_limit_s=args.time_limit, threads=args.threads,
                           device=args.device)

        def save(rows: list[dict]) -> None:
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            if args.output is not None:
                args.output.write_text(json.dumps(rows, indent=1) + "\n")

        rows = leave_one_family_out(FAMILIES, n_train=args.train_per_family,
                                    n_test=args.test_per_family, seed=args.seed,
                                    settings=settings, processes=args.processes,
                                    held_out=args.held_out, cache=args.cache,
                                    checkpoints=args.checkpoints, on_row=save)
    print(table(rows))
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
