"""The convolutional networks behind `TipClassifier`, selectable by name.

Both take a batch of normalised images, shape (n, 1, 64, 64), and return one logit per image
(log-odds of a good tip).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn


def _conv_block(in_channels: int, out_channels: int, layers: int) -> nn.Sequential:
    """`layers` 3x3 convolutions with batch norm and ReLU, then a 2x2 max-pool."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    modules.append(nn.MaxPool2d(2))
    return nn.Sequential(*modules)


class LineDifferences(nn.Module):
    """The image and its change from the scan line before (zero on the first line), as two
    channels: an unstable or contaminated tip changes the image from one line to the next,
    which a strided stem would otherwise have to learn to isolate."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, nn.functional.pad(x.diff(dim=-2), (0, 0, 1, 0))], dim=1)


class CompactNet(nn.Module):
    """Small CNN for the CPU: a strided stem, three conv blocks (32-96 channels), global
    pooling, one logit.

    The stem (4 x 4 convolution, stride 2, 16 channels) halves the image at once, which
    halves the cost of training and inference against a full-resolution first block at the
    same validation ROC-AUC on simulated data. Global average and max pooling side by side
    keep both "how much of the frame" (blur, contrast) and "is there one strong feature
    anywhere" (a streak, a ghost). About 0.2 M parameters.

    Parameters
    ----------
    channels
        Channels of the stem and of the three blocks that follow it.
    dropout
        Dropout before the final layer.
    line_differences
        Give the stem `LineDifferences` (the image and its line-to-line change) instead of
        the image alone.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96), dropout: float = 0.3,
                 line_differences: bool = False):
        super().__init__()
        stem = nn.Sequential(
            *([LineDifferences()] if line_differences else []),
            nn.Conv2d(2 if line_differences else 1, channels[0], 4, stride=2, padding=1,
                      bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        blocks = [_conv_block(a, b, 2) for a, b in zip(channels, channels[1:], strict=False)]
        self.trunk = nn.Sequential(stem, *blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * channels[-1], 64), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(64, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.trunk(x)
        pooled = self.avg_pool(features).flatten(1), self.max_pool(features).flatten(1)
        return self.head(torch.cat(pooled, dim=1)).squeeze(1)


class DeepSPMNet(nn.Module):
    """The network of Krull et al. (2020): 4 blocks of 3 conv layers (64-512), FC 1024-1024.

    Batch norm after each convolution, max-pool after each block, dropout 0.5 before each
    fully connected layer, one logit. About 25 M parameters (100 MB of weights), so it is
    selectable for comparison, not the default.

    References
    ----------
    A. Krull, P. Hirsch, C. Rother, A. Schiffrin, C. Krull, "Artificial-intelligence-driven
    scanning probe microscopy", Commun. Phys. 3, 54 (2020), doi:10.1038/s42005-020-0317-3.
    """

    def __init__(self, pixels: int = 64, dropout: float = 0.5):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.trunk = nn.Sequential(*(
            _conv_block(1 if i == 0 else widths[i - 1], w, 3) for i, w in enumerate(widths)
        ))
        side = pixels // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(widths[-1] * side * side, 1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).squeeze(1)


LEAN_CHANNELS = (8, 16, 32, 48)

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "compact": CompactNet,
    # CompactNet at half the width: a quarter of the parameters (59 k), half the training
    # step on a CPU; the same trunk shape, so the agent's Q network and the fast inference
    # path take it as they take "compact"
    "lean": functools.partial(CompactNet, channels=LEAN_CHANNELS),
    # the same networks given each scan line's change from the one before as well
    "compact-lines": functools.partial(CompactNet, line_differences=True),
    "lean-lines": functools.partial(CompactNet, channels=LEAN_CHANNELS, line_differences=True),
    "deepspm": DeepSPMNet,
}


def build_network(architecture: str) -> nn.Module:
    """A freshly initialised network of the named architecture (see `ARCHITECTURES`)."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown classifier architecture {architecture!r}; known: {sorted(ARCHITECTURES)}"
        ) from None
    return factory()
