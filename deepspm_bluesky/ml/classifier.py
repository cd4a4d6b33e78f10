"""`TipClassifier`: P(good tip) for STM images, from a torch network and the pipeline's
preprocessing; saving and loading checkpoints (weights load with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .evaluation import GOOD_TIP_THRESHOLD
from .inference import inference
from .networks import ARCHITECTURES, CompactNet, build_network
from .ood import FeatureDensity, image_statistics, network_features
from .preprocessing import INPUT_FRAME_NM, PIXELS, frame_side_nm, network_input, preprocess
from .qnetwork import inference_trunk, pooled

CHECKPOINT_FORMAT = "deepspm_bluesky.TipClassifier"
CHECKPOINT_VERSION = 1
SHIPPED_WEIGHTS = {
    # trained on every simulated surface family and the default sample (the default)
    "pretrained": "tip_classifier.pt",
    # trained on the default sample alone (MgPc on Ag(100) at 1 V, 10 nm frames), as DeepSPM
    "pretrained-ag100": "tip_classifier_ag100.pt",
}


class _FoldedTrunk(NamedTuple):
    """A trunk, its tensors, their versions when `folded` was made from it, and `folded`."""

    trunk: nn.Module
    tensors: tuple[torch.Tensor, ...]
    versions: tuple[int, ...]
    folded: nn.Module


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
    familiarity
        Density of the training images' features (`ood.FeatureDensity`), which `familiar`
        needs; `fit_familiarity` makes one.

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
                 metadata: dict[str, Any] | None = None,
                 familiarity: FeatureDensity | None = None) -> None:
        self.architecture = architecture
        self.network = build_network(architecture) if network is None else network
        self.network.eval()
        self.threshold = threshold
        self.metadata = dict(metadata or {})
        self.familiarity = familiarity
        self._fast_trunk: _FoldedTrunk | None = None

    def __repr__(self) -> str:
        return f"TipClassifier({self.architecture!r}, threshold={self.threshold})"

    # -- inference ---------------------------------------------------------------------------
    def logits(self, images: np.ndarray, *, normalized: bool | None = None,
               batch_size: int = 256) -> np.ndarray:
        """Network output (log-odds of a good tip), one per image; see `predict`."""
        stack = preprocess(images, normalized=normalized, pixels=PIXELS)
        self._evaluating()
        device = next(self.network.parameters()).device
        out = []
        with inference(len(stack)):
            for start in range(0, len(stack), batch_size):
                batch = torch.from_numpy(stack[start:start + batch_size]).unsqueeze(1)
                out.append(self.network(batch.to(device)).float().cpu().numpy())
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

    def predict_frame(self, image: np.ndarray, *, pixel_nm: float | None = None) -> float:
        """P(good tip) for one raw frame of any size (`preprocessing.network_input`)."""
        return float(self.predict(network_input(image, pixel_nm=pixel_nm), normalized=True)[0])

    # -- knowing when it does not know -----------------------------------------------------
    def features(self, images: np.ndarray, *, normalized: bool | None = None,
                 batch_size: int = 256) -> np.ndarray:
        """The pooled trunk features the head reads (`ood.network_features`) and the images'
        spectrum and histogram (`ood.image_statistics`), (n, d)."""
        stack = preprocess(images, normalized=normalized, pixels=PIXELS)
        self._evaluating()
        device = next(self.network.parameters()).device
        out = []
        with inference(len(stack)):
            for start in range(0, len(stack), batch_size):
                batch = torch.from_numpy(stack[start:start + batch_size]).unsqueeze(1)
                out.append(network_features(self.network, batch.to(device)).double().cpu()
                           .numpy())
        if not out:
            return np.empty((0, 0))
        return np.concatenate([np.concatenate(out), image_statistics(stack)], axis=1)

    def fit_familiarity(self, train_images: np.ndarray,
                        held_out_images: np.ndarray | None = None) -> FeatureDensity:
        """Fit (and keep) the density of the training images' features; its threshold is
        the 95 % quantile of the held-out images' distances (`ood.FeatureDensity.fit`).
        Images are normalised network inputs or raw 64 x 64 heights."""
        held_out = None if held_out_images is None else self.features(held_out_images)
        self.familiarity = FeatureDensity.fit(self.features(train_images), held_out)
        return self.familiarity

    def unfamiliarity(self, images: np.ndarray, *, normalized: bool | None = None) -> np.ndarray:
        """How unlike the training images each image is: the Mahalanobis distance of its
        features (n,); above `familiarity.threshold` it counts as unfamiliar.

        Raises
        ------
        RuntimeError
            If these weights carry no feature density (see `fit_familiarity`).
        """
        if self.familiarity is None:
            raise RuntimeError("these classifier weights carry no density of their training "
                               "images; call fit_familiarity(train_images) first")
        return self.familiarity.distance(self.features(images, normalized=normalized))

    def familiar(self, images: np.ndarray, *, normalized: bool | None = None,
                 frame_nm: float | np.ndarray | None = None) -> np.ndarray:
        """Whether each image is like the images the classifier was trained on.

        Parameters
        ----------
        images
            As for `predict`: raw heights in metres or normalised, (64, 64) or (n, 64, 64).
        normalized
            Whether the images are already normalised; None decides from their values.
        frame_nm
            Side of each frame in nm, if known: a frame outside the trained range
            (`preprocessing.INPUT_FRAME_NM`, 5-25 nm) is unfamiliar whatever it shows.

        Returns
        -------
        numpy.ndarray
            bool (n,): True where the image's unfamiliarity is within the threshold. Where
            it is False, P(good) is a guess: do not condition the tip on it, fine-tune on
            labelled images of this sample (``deepspm-bluesky train-classifier --init
            pretrained --data FOLDER``).
        """
        ok = self.unfamiliarity(images, normalized=normalized) <= self.familiarity.threshold
        if frame_nm is not None:
            side = np.asarray(frame_nm, dtype=float)
            low, high = INPUT_FRAME_NM[0] * (1 - 1e-9), INPUT_FRAME_NM[1] * (1 + 1e-9)
            ok &= (side >= low) & (side <= high)
        return ok

    def predict_familiar(self, images: np.ndarray, *, normalized: bool | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """`predict` and `familiar` together, the trunk run once where the head reads the
        pooled features (the compact network): what a survey needs per image.

        Returns
        -------
        tuple of numpy.ndarray
            P(good) (n,) float64, and familiar (n,) bool.
        """
        if self.familiarity is None or not isinstance(self.network, CompactNet):
            return (self.predict(images, normalized=normalized),
                    self.familiar(images, normalized=normalized))
        stack = preprocess(images, normalized=normalized, pixels=PIXELS)
        self._evaluating()
        device = next(self.network.parameters()).device
        with inference(len(stack)):
            batch = torch.from_numpy(stack).unsqueeze(1).to(device)
            pooled = self._pooled(batch)  # = the head's input
            logits = self.network.head(pooled).squeeze(1).double().cpu().numpy()
            pooled = pooled.double().cpu().numpy()
        features = np.concatenate([pooled, image_statistics(stack)], axis=1)
        familiar = self.familiarity.distance(features) <= self.familiarity.threshold
        return 1.0 / (1.0 + np.exp(-logits)), familiar

    def _evaluating(self) -> None:
        """The network in evaluation mode; `eval()` only after training, since it walks
        every module (0.14 ms, a twentieth of judging one image)."""
        if self.network.training:
            self.network.eval()

    def _pooled(self, batch: torch.Tensor) -> torch.Tensor:
        """The head's input (pooled trunk features of a CompactNet) through a copy of the
        trunk with batch norm folded into the convolutions, channels-last (`qnetwork.
        inference_trunk`: 1.5 against 2.3 ms for one image on one thread), made again
        whenever the weights change (a tensor's version counts its in-place changes)."""
        return pooled(self._folded_trunk()(batch.contiguous(memory_format=torch.channels_last)))

    def _folded_trunk(self) -> nn.Module:
        """The folded trunk of the current weights; the trunk's tensors are listed once per
        trunk, since walking its modules for them took a sixth of judging an image."""
        trunk, cached = self.network.trunk, self._fast_trunk
        same_trunk = cached is not None and cached.trunk is trunk
        tensors = cached.tensors if same_trunk else (*trunk.parameters(), *trunk.buffers())
        versions = tuple(t._version for t in tensors)
        if not same_trunk or versions != cached.versions:
            self._fast_trunk = _FoldedTrunk(trunk, tensors, versions, inference_trunk(trunk))
        return self._fast_trunk.folded

    def familiar_frame(self, image: np.ndarray, *, pixel_nm: float) -> bool:
        """`familiar` for one raw frame of any size, brought in by `network_input`."""
        data = network_input(image, pixel_nm=pixel_nm)
        return bool(self.familiar(data, normalized=True,
                                  frame_nm=frame_side_nm(image, pixel_nm))[0])

    def fingerprint(self) -> str:
        """SHA-256 (hex, first 16 digits) of the network's weights: which weights judged a
        run, whatever file they came from (a run can record it with the source name)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write architecture, weights and metadata to `path` (a torch file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "architecture": self.architecture, "threshold": float(self.threshold),
            "metadata": _plain(self.metadata), "state_dict": self.network.state_dict(),
            **({} if self.familiarity is None
               else {"familiarity": self.familiarity.as_tensors()}),
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
        familiarity = None
        if "familiarity" in checkpoint:
            try:
                familiarity = FeatureDensity.from_tensors(checkpoint["familiarity"])
            except ValueError as error:
                raise CheckpointError(f"{path}: {error}") from None
        return cls(architecture, network=network, threshold=checkpoint["threshold"],
                   metadata=checkpoint["metadata"], familiarity=familiarity)

    @classmethod
    def pretrained(cls, name: str = "pretrained") -> TipClassifier:
        """A classifier with weights shipped in the package (no download), by name
        (`SHIPPED_WEIGHTS`): by default those trained on every simulated surface family."""
        if name not in SHIPPED_WEIGHTS:
            raise ValueError(f"no shipped classifier {name!r}; shipped: "
                             f"{', '.join(SHIPPED_WEIGHTS)}")
        weights = resources.files("deepspm_bluesky.ml") / "weights" / SHIPPED_WEIGHTS[name]
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
