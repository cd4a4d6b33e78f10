"""Training of the tip classifier: augmentation, class weighting, Adam, early stopping.

Follows DeepSPM (Krull et al. 2020: Adam, lr 1e-3, batch 64, weight decay 5e-5, weighted
positives, flips, contrast and brightness changes) with a step budget sized for a CPU, 90-degree
rotations, a cosine learning-rate decay and early stopping on the validation ROC-AUC.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .classifier import TipClassifier
from .data import LabelledImages
from .evaluation import roc_auc
from .preprocessing import NORMALIZED_LIMIT


@dataclass
class TrainingSettings:
    """Everything that decides a training run; stored with the weights it produced.

    Attributes
    ----------
    architecture
        Network name, see `networks.ARCHITECTURES`.
    seed
        Seed of initialisation, batch order and augmentation.
    max_steps, batch_size
        Optimiser steps at most, and images per step.
    learning_rate, weight_decay
        Adam settings; the rate decays to zero along a cosine over `max_steps`.
    positive_weight
        Weight of the good-tip class in the loss; None balances the classes (n_bad / n_good).
    eval_every, patience
        Validation every `eval_every` steps; stop after `patience` validations without a
        better ROC-AUC (ties broken by a lower validation loss).
    flips, rotations
        Random horizontal/vertical flips, random multiples of 90 degrees.
    contrast, brightness
        Largest relative change of height contrast and largest shift of the normalised image.
        Kept small: a changed contrast is itself the sign of a contaminated tip.
    threads
        torch CPU threads during training.
    time_limit_s
        Stop (after one last validation) once training has run this long; None: no limit.
        A safety on a busy machine; the steps actually run are recorded.
    device
        torch device to train on ("cpu", "cuda"); the returned classifier is on the CPU.
    """

    architecture: str = "compact"
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    positive_weight: float | None = None
    eval_every: int = 100
    patience: int = 6
    flips: bool = True
    rotations: bool = True
    contrast: float = 0.08
    brightness: float = 0.05
    threads: int = 2
    time_limit_s: float | None = None
    device: str = "cpu"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingResult:
    """The best classifier found and how the run went."""

    classifier: TipClassifier
    best_validation_auc: float
    best_step: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def augment(batch: Tensor, settings: TrainingSettings, generator: torch.Generator) -> Tensor:
    """Randomly flipped, rotated, contrast- and brightness-changed copies of (n, 1, h, w)."""
    n = batch.shape[0]

    def coin() -> Tensor:
        return (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1)

    if settings.flips:
        batch = torch.where(coin(), batch.flip(-1), batch)
        batch = torch.where(coin(), batch.flip(-2), batch)
    if settings.rotations:
        batch = torch.where(coin(), batch.transpose(-1, -2), batch)  # with flips: all 8 turns
    scale = 1 + settings.contrast * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    shift = settings.brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    # contrast about the plane (-1 after normalisation), then clip as the normalisation does
    return ((batch + 1) * scale - 1 + shift).clamp(-NORMALIZED_LIMIT, NORMALIZED_LIMIT)


def _positive_weight(labels: np.ndarray, settings: TrainingSettings) -> float:
    if settings.positive_weight is not None:
        return float(settings.positive_weight)
    n_good = float(labels.sum())
    if n_good == 0 or n_good == labels.size:
        raise ValueError("training data need both good and bad tips")
    return (labels.size - n_good) / n_good


class _Batches:
    """Endless shuffled mini-batches, reshuffled every pass (seeded)."""

    def __init__(self, data: LabelledImages, batch_size: int, generator: torch.Generator):
        self.images = torch.from_numpy(data.images).unsqueeze(1)
        self.labels = torch.from_numpy(data.labels)
        self.batch_size, self.generator = min(batch_size, len(data)), generator
        self.order, self.position = torch.empty(0, dtype=torch.long), 0

    def next(self) -> tuple[Tensor, Tensor]:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.labels), generator=self.generator)
            self.position = 0
        idx = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.images[idx], self.labels[idx]


def _validate(classifier: TipClassifier, data: LabelledImages,
              loss_fn: torch.nn.Module) -> tuple[float, float]:
    logits = classifier.logits(data.images, normalized=True)
    device = loss_fn.pos_weight.device
    loss = float(loss_fn(torch.from_numpy(logits).to(device),
                         torch.from_numpy(data.labels).to(device)))
    return roc_auc(data.labels, logits), loss


def train_classifier(
    train: LabelledImages,
    validation: LabelledImages,
    settings: TrainingSettings | None = None,
    *,
    checkpoint: str | Path | None = None,
    initial: TipClassifier | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train a tip classifier and return the one with the best validation ROC-AUC.

    Parameters
    ----------
    train, validation
        Labelled normalised images; the validation set must hold good and bad tips.
    settings
        Training settings (defaults: `TrainingSettings()`).
    checkpoint
        If given, the best classifier so far is saved here at every improvement.
    initial
        Start from this classifier's weights (fine-tuning), e.g. `TipClassifier.pretrained()`;
        it is copied, not changed, and its architecture replaces `settings.architecture`.
    progress
        Show a tqdm progress bar with the loss and validation ROC-AUC.

    Returns
    -------
    TrainingResult
        The best classifier (its metadata hold the settings and scores) and the run history.
    """
    settings = settings or TrainingSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(train, validation, settings, checkpoint, initial, progress)
    finally:
        torch.set_num_threads(threads)


def _train(train, validation, settings, checkpoint, initial, progress) -> TrainingResult:
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    if initial is not None:
        classifier = TipClassifier(initial.architecture, network=copy.deepcopy(initial.network),
                                   threshold=initial.threshold)
    else:
        classifier = TipClassifier(settings.architecture)
    device = torch.device(settings.device)
    # channels-last: about a sixth less time a step on a CPU, measured on the compact networks
    network = classifier.network.to(device, memory_format=torch.channels_last)
    weight = torch.tensor(_positive_weight(train.labels, settings), device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate,
                                 weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.max_steps)
    batches = _Batches(train, settings.batch_size, generator)
    best_key, best_state, best_step, waited, history = (-1.0, 0.0), None, 0, 0, []
    start = time.perf_counter()
    bar = tqdm(range(1, settings.max_steps + 1), desc="training", disable=not progress,
               unit="step")
    step = 0
    for step in bar:
        network.train()
        images, labels = batches.next()
        images = augment(images, settings, generator).to(
            device, memory_format=torch.channels_last, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), labels.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        schedule.step()
        out_of_time = (settings.time_limit_s is not None
                       and time.perf_counter() - start > settings.time_limit_s)
        if step % settings.eval_every and step != settings.max_steps and not out_of_time:
            continue
        auc, val_loss = _validate(classifier, validation, loss_fn)
        train_loss = loss.item()
        history.append({"step": step, "train_loss": train_loss, "validation_loss": val_loss,
                        "validation_auc": auc})
        bar.set_postfix(loss=f"{train_loss:.3f}", val_auc=f"{auc:.4f}")
        if (auc, -val_loss) > best_key:
            best_key, best_step, waited = (auc, -val_loss), step, 0
            best_state = copy.deepcopy(network.state_dict())
            if checkpoint is not None:
                _with_state(classifier, best_state, settings, best_key[0], step).save(checkpoint)
        else:
            waited += 1
        if waited >= settings.patience or out_of_time:
            break
    bar.close()
    classifier.network.to("cpu", memory_format=torch.contiguous_format)
    best = _with_state(classifier, best_state, settings, best_key[0], best_step)
    return TrainingResult(best, best_key[0], best_step, step, time.perf_counter() - start, history)


def _with_state(classifier: TipClassifier, state: dict, settings: TrainingSettings,
                auc: float, step: int) -> TipClassifier:
    network = copy.deepcopy(classifier.network).cpu()
    network.load_state_dict(state)
    # a fine-tuned classifier keeps the architecture of the one it started from
    used = {**settings.as_dict(), "architecture": classifier.architecture}
    metadata = {"settings": used, "validation_auc": auc, "best_step": step,
                "torch": str(torch.__version__)}
    return TipClassifier(classifier.architecture, network=network,
                         threshold=classifier.threshold, metadata=metadata)
