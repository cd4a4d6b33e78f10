"""The conditioning agent's Q network: the tip classifier's CNN trunk and a (dueling) Q head.

The trunk is `CompactNet`'s (strided stem and three conv blocks); average and max pooling
side by side give one feature vector per image, and the head maps it to one Q value per
action. DeepSPM's agent also starts from its classifier's trunk (Krull et al., Commun.
Phys. 3, 54 (2020)); the dueling head is Wang et al., ICML 2016 (arXiv:1511.06581).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .networks import CompactNet, LineDifferences

DEFAULT_CHANNELS = (16, 32, 64, 96)


def trunk_channels(trunk: nn.Module) -> tuple[int, ...]:
    """Channels of the stem and blocks of a `CompactNet` trunk (read from its convolutions)."""
    widths: list[int] = []
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d) and (not widths or widths[-1] != module.out_channels):
            widths.append(module.out_channels)
    return tuple(widths)


class QHead(nn.Module):
    """Features -> Q values: layer norm, one hidden layer, plain or dueling output.

    Parameters
    ----------
    feature_size
        Length of the feature vector.
    n_actions
        Number of Q values.
    hidden
        Width of the hidden layer.
    dueling
        Q = V + A - mean(A) (Wang et al. 2016) instead of one linear output.
    """

    def __init__(self, feature_size: int, n_actions: int, *, hidden: int = 128,
                 dueling: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(feature_size), nn.Linear(feature_size, hidden),
                                  nn.ReLU(inplace=True))
        self.dueling = dueling
        self.advantage = nn.Linear(hidden, n_actions)
        self.value = nn.Linear(hidden, 1) if dueling else None

    def forward(self, features: Tensor) -> Tensor:
        hidden = self.body(features)
        advantage = self.advantage(hidden)
        if self.value is None:
            return advantage
        return self.value(hidden) + advantage - advantage.mean(dim=1, keepdim=True)


class QNetwork(nn.Module):
    """Normalised images (n, 1, 64, 64) -> Q values (n, n_actions).

    Parameters
    ----------
    n_actions
        Size of the action table.
    channels
        Trunk channels (those of `CompactNet`).
    hidden, dueling
        As for `QHead`.
    trunk
        A ready trunk to copy (e.g. the classifier's); `channels` and `line_differences`
        are then read from it.
    line_differences
        The trunk's stem also sees each scan line's change (`networks.LineDifferences`),
        as the "-lines" classifiers' trunks do.
    """

    def __init__(self, n_actions: int, *, channels: tuple[int, ...] = DEFAULT_CHANNELS,
                 hidden: int = 128, dueling: bool = True, trunk: nn.Module | None = None,
                 line_differences: bool = False):
        super().__init__()
        if trunk is not None:
            self.trunk = copy.deepcopy(trunk)
            channels = trunk_channels(trunk)
            line_differences = any(isinstance(m, LineDifferences) for m in trunk.modules())
        else:
            self.trunk = CompactNet(channels=tuple(channels),
                                    line_differences=line_differences).trunk
        self.channels = tuple(channels)
        self.line_differences = line_differences
        self.feature_size = 2 * self.channels[-1]
        self.head = QHead(self.feature_size, n_actions, hidden=hidden, dueling=dueling)

    @property
    def trunk_shape(self) -> tuple[tuple[int, ...], bool]:
        """What a checkpoint must match to load into this network: channels, line changes."""
        return self.channels, self.line_differences

    def features(self, images: Tensor) -> Tensor:
        """Pooled trunk features (n, feature_size): average and max over the last map."""
        return pooled(self.trunk(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def pooled(maps: Tensor) -> Tensor:
    """Average and max over the last feature map, side by side: (n, 2 * channels)."""
    return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


def inference_trunk(trunk: nn.Module) -> nn.Module:
    """A copy of a frozen trunk for fast inference: every convolution followed by batch norm
    folded into one convolution, weights in channels-last layout (about twice as fast for a
    batch of one on a CPU; equal to the original to float rounding).

    Feed it channels-last input (``x.contiguous(memory_format=torch.channels_last)``).
    """
    trunk = copy.deepcopy(trunk).eval()
    for sequence in [m for m in trunk.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                sequence[i] = fuse_conv_bn_eval(conv, norm)
                sequence[i + 1] = nn.Identity()
    return trunk.to(memory_format=torch.channels_last).requires_grad_(False)
