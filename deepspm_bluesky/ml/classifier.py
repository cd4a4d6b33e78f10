"""`TipClassifier`: P(good tip) for STM images, from a torch network and the pipeline's
preprocessing; saving and loading checkpoints (weights load with ``weights_only=True``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .evaluation import GOOD_TIP_THRESHOLD
from .networks import ARCHITECTURES, build_network
from .preprocessing import PIXELS, preprocess

CHECKPOINT_FORMAT = "deepspm_bluesky.TipClassifier"
CHECKPOINT_VERSION = 1
PRETRAINED_NAME = "tip_classifier.pt"


class CheckpointError(ValueError):
    """A classifier checkpoint that cannot be used: unreadable, foreign, or wrong shapes."""


class TipClassifier:
    """Probability that the tip is good, judged from one or more 64 x 64 STM images.

    A thin wrapper around a torch network (`network`): it preprocesses raw height images
    exactly as the survey pipeline does (`imaging.flatten_plane`, then `imaging.normalize`),
    runs the network in evaluation mode on the CPU and returns probabilities.

    Parameters
    ----------
    architecture
        "compact" (default, small and fast on a CPU) or "deepspm" (the paper's network).
    network
        A ready network; if given, `architecture` only names it.
    threshold
        P(good) at or above which a tip counts as good (DeepSPM: 0.9).
    metadata
        Free-form facts about the weights (training seed, settings, scores).

    Examples
    --------
    >>> from deepspm_bluesky.ml import TipClassifier
    >>> from deepspm_bluesky.sim import SimulatedMicroscope
    >>> classifier = TipClassifier.pretrained()
    >>> image = SimulatedMicroscope(seed=1).scan(0.0, 0.0, 10e-9, 64)
    >>> 0.0 <= classifier(image) <= 1.0
    True
    """

    def __init__(self, architecture: str = "compact", *, network: nn.Module | None = None,
                 threshold: float = GOOD_TIP_THRESHOLD,
                 metadata: dict[str, Any] | None = None) -> None:
        self.architecture = architecture
        self.network = build_network(architecture) if network is None else network
        self.network.eval()
        self.threshold = threshold
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"TipClassifier({self.architecture!r}, threshold={self.threshold})"

    # -- inference ---------------------------------------------------------------------------
    def logits(self, images: np.ndarray, *, normalized: bool | None = None,
               batch_size: int = 256) -> np.ndarray:
        """Network output (log-odds of a good tip), one per image; see `predict`."""
        stack = preprocess(images, normalized=normalized, pixels=PIXELS)
        self.network.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(stack), batch_size):
                batch = torch.from_numpy(stack[start:start + batch_size]).unsqueeze(1)
                out.append(self.network(batch).float().numpy())
        return np.concatenate(out) if out else np.empty(0, np.float32)

    def predict(self, images: np.ndarray, *, normalized: bool | None = None) -> np.ndarray:
        """P(good tip) for each image.

        Parameters
        ----------
        images
            Raw heights in metres or normalised images, shape (64, 64) or (n, 64, 64).
        normalized
            Whether the images are already normalised; None decides from their values.

        Returns
        -------
        numpy.ndarray
            float64 probabilities, shape (n,) (n = 1 for a single image).
        """
        logits = self.logits(images, normalized=normalized).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logits))

    def __call__(self, image: np.ndarray) -> float:
        """P(good tip) for one image, as a float: the `classifier=` callable of the plans."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected one 2-D image, got shape {image.shape}; use predict()")
        return float(self.predict(image)[0])

    def is_good(self, image: np.ndarray) -> bool:
        """True if P(good) reaches the threshold."""
        return self(image) >= self.threshold

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write architecture, weights and metadata to `path` (a torch file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "architecture": self.architecture, "threshold": float(self.threshold),
            "metadata": _plain(self.metadata), "state_dict": self.network.state_dict(),
        }, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TipClassifier:
        """A classifier from a checkpoint written by `save`.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        CheckpointError
            If the file is not a torch file, not a tip-classifier checkpoint, names an
            unknown architecture, or holds weights of the wrong names or shapes.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no classifier checkpoint at {path}")
        checkpoint = _read_checkpoint(path)
        architecture = checkpoint["architecture"]
        if architecture not in ARCHITECTURES:
            raise CheckpointError(
                f"{path}: unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
            )
        network = build_network(architecture)
        try:
            network.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            raise CheckpointError(
                f"{path}: the weights do not fit the {architecture!r} network: {error}"
            ) from None
        return cls(architecture, network=network, threshold=checkpoint["threshold"],
                   metadata=checkpoint["metadata"])

    @classmethod
    def pretrained(cls) -> TipClassifier:
        """The default classifier with the weights shipped in the package (no download)."""
        weights = resources.files("deepspm_bluesky.ml") / "weights" / PRETRAINED_NAME
        with resources.as_file(weights) as path:
            return cls.load(path)


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as JSON types only (numbers, strings, lists, dicts), which
    ``torch.load(..., weights_only=True)`` accepts; anything else becomes its string."""
    return json.loads(json.dumps(metadata, default=str))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a tip-classifier checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint.get('version')!r}, "
                              f"this code reads version {CHECKPOINT_VERSION}")
    missing = {"architecture", "threshold", "metadata", "state_dict"} - set(checkpoint)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    return checkpoint
