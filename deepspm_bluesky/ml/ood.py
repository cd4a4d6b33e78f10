"""Knowing when the classifier does not know: a density of the network's features on its
training images, and a distance that says how unlike them a new image is.

The features are those the classifier's head reads (global average and max pooling of the
trunk's last feature maps, `network_features`) beside a few statistics of the image itself
(`image_statistics`: its radial power spectrum and height histogram), since a network
trained to ignore the surface may also map a new surface onto familiar features. Their
distribution over the training images is summarised by a mean and a covariance shrunk
towards its diagonal (so the mixed scales do not matter); an image's *unfamiliarity* is
its Mahalanobis distance from that mean. The threshold is the 95 % quantile of the
distances of held-out images of the training distribution, so 1 in 20 familiar images is
flagged by chance: one flag is weak evidence, and a survey should act on most of its recent
images being flagged. A higher quantile does not work: the training images of unstable tips
(streaks, jumps) have a long tail of wild features, so at 99 % nearly no image of a new
surface is flagged, while at 95 % 30-95 % of them are (measured on the simulator's families
with the shipped weights, which saw only MgPc on Ag(100)).

References
----------
Lee et al., "A simple unified framework for detecting out-of-distribution samples and
adversarial attacks", NeurIPS 2018, https://arxiv.org/abs/1807.03888.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .qnetwork import pooled

SHRINKAGE = 0.1  # covariance pulled this far towards its diagonal (well conditioned)
QUANTILE = 0.95  # familiar images flagged by chance: 1 - QUANTILE (see the module notes)


SPECTRUM_BINS = 12
HISTOGRAM_BINS = 12


def network_features(network: nn.Module, batch: Tensor) -> Tensor:
    """Global average and max pooling of the trunk's output, (n, 2 * channels)."""
    return pooled(network.trunk(batch))


def image_statistics(images: np.ndarray) -> np.ndarray:
    """Radial log power spectrum (12 log-spaced bins) and histogram (12 bins over the
    normalised range) of normalised images (n, h, w) -> (n, 24)."""
    images = np.asarray(images, dtype=np.float64)
    n, h, w = images.shape
    power = np.abs(np.fft.rfft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
    which, counts = _spectrum_bins(h, w)
    sums = _binned_sums(which, power.reshape(n, -1), SPECTRUM_BINS + 1)
    spectrum = np.log10(sums[:, :SPECTRUM_BINS] / np.maximum(counts[:SPECTRUM_BINS], 1)
                        + 1e-12)
    index = np.clip(np.searchsorted(_HISTOGRAM_EDGES, images.reshape(n, -1), side="right") - 1,
                    0, HISTOGRAM_BINS - 1)
    histogram = _binned_sums(index, None, HISTOGRAM_BINS)
    return np.concatenate([spectrum, histogram / (h * w)], axis=1)


_HISTOGRAM_EDGES = np.linspace(-1.5, 1.5 + 1e-9, HISTOGRAM_BINS + 1)


@functools.cache
def _spectrum_bins(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum bin of each rfft2 frequency of an h x w image (the zero frequency in the
    extra last bin, dropped) and the count of each bin: the same for every image."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    radius = np.hypot(fy, fx).ravel()
    edges = np.geomspace(1.0 / max(h, w), 0.5 * np.sqrt(2) + 1e-9, SPECTRUM_BINS + 1)
    which = np.clip(np.searchsorted(edges, radius, side="right") - 1, 0, SPECTRUM_BINS - 1)
    which[radius < edges[0]] = SPECTRUM_BINS
    return which, np.bincount(which, minlength=SPECTRUM_BINS + 1)


def _binned_sums(which: np.ndarray, weights: np.ndarray | None, bins: int) -> np.ndarray:
    """Per row, the sum of `weights` (counts when None) in each of `bins` bins: one
    `bincount` for all rows, each row's bins offset past the previous row's."""
    rows = len(weights) if weights is not None else len(which)
    offset = which + bins * np.arange(rows)[:, None]
    flat = None if weights is None else weights.ravel()
    return np.bincount(offset.ravel(), weights=flat, minlength=rows * bins).reshape(rows, bins)


@dataclass
class FeatureDensity:
    """Mean, precision and threshold of the training images' features.

    Attributes
    ----------
    mean
        (d,) mean feature vector.
    precision
        (d, d) inverse of the shrunk covariance.
    threshold
        Mahalanobis distance above which an image counts as unfamiliar.
    """

    mean: np.ndarray
    precision: np.ndarray
    threshold: float

    @classmethod
    def fit(cls, features: np.ndarray, held_out: np.ndarray | None = None, *,
            quantile: float = QUANTILE, shrinkage: float = SHRINKAGE) -> FeatureDensity:
        """Fit on training features (n, d); the threshold is the `quantile` of the distances
        of `held_out` features (default: the training features themselves).

        Raises
        ------
        ValueError
            With fewer than two feature vectors.
        """
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need (n >= 2, d) features, got shape {features.shape}")
        mean = features.mean(axis=0)
        covariance = np.cov(features, rowvar=False)
        variance = np.diag(covariance).copy()
        variance[variance <= 0] = max(float(variance.max()), 1e-12)  # constant features
        covariance = (1 - shrinkage) * covariance + shrinkage * np.diag(variance)
        density = cls(mean, np.linalg.inv(covariance), 0.0)
        reference = features if held_out is None else np.asarray(held_out, dtype=np.float64)
        density.threshold = float(np.quantile(density.distance(reference), quantile))
        return density

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature vector (n,) from the training mean."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.einsum("ij,ij->i", centred @ self.precision, centred))

    def as_tensors(self) -> dict[str, Tensor]:
        """The density as tensors, for a checkpoint read with ``weights_only=True``."""
        return {"mean": torch.from_numpy(self.mean), "precision": torch.from_numpy(self.precision),
                "threshold": torch.tensor(self.threshold, dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> FeatureDensity:
        """The density saved by `as_tensors`.

        Raises
        ------
        ValueError
            If a part is missing or the shapes disagree.
        """
        try:
            mean = tensors["mean"].double().numpy()
            precision = tensors["precision"].double().numpy()
            threshold = float(tensors["threshold"])
        except (KeyError, AttributeError, TypeError) as error:
            raise ValueError(f"incomplete feature density: {error}") from None
        if precision.shape != (mean.size, mean.size):
            raise ValueError(f"feature density: mean of {mean.size} features but precision "
                             f"of shape {precision.shape}")
        return cls(mean, precision, threshold)
