"""Ordinary user-defined model classes, referenced by benign full-model pickles in the corpus.

A pickle of these names ``tests._benign_models.<Class>``: loading it imports this module (trusting the
project that ships it) but runs no foreign code, so the scanner should say "suspicious", never
"malicious". Importing torch here is deliberate: a real project's model module does the same.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """A small CNN with the usual layer zoo (conv, batch norm, linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.bn(self.conv(x)).relu()
        logits: torch.Tensor = self.head(features.mean(dim=(2, 3)))
        return logits


class StandardScaler:
    """A scikit-learn-like estimator: plain attributes, pickled by reference to its class."""

    def __init__(self, mean: list[float], scale: list[float]) -> None:
        self.mean_ = mean
        self.scale_ = scale
        self.n_features_in_ = len(mean)
