"""STSTNet (Liong et al., FG 2019): shallow triple-stream net on 28×28 (u, v, strain) maps, ~1.7 k weights.

Three parallel 3×3 convolutions (3, 5 and 8 filters) see the same 3-channel input; each is ReLU'd and
max-pooled 3×3/3, the streams are concatenated, average-pooled 2×2 and flattened into one linear layer
(written from the paper's description, not copied from code).
"""

from __future__ import annotations

import torch
from torch import nn


class STSTNet(nn.Module):
    """(N, 3, 28, 28) → (N, n_classes) logits."""

    def __init__(self, in_channels: int = 3, n_classes: int = 3, input_size: int = 28) -> None:
        super().__init__()
        self.streams = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, filters, 3, padding=1),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, stride=3, padding=1),
                )
                for filters in (3, 5, 8)
            ]
        )
        self.pool = nn.AvgPool2d(2, stride=2)
        pooled = ((input_size + 2 - 3) // 3 + 1) // 2
        self.fc = nn.Linear(16 * pooled * pooled, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([stream(x) for stream in self.streams], dim=1)
        return self.fc(torch.flatten(self.pool(merged), 1))
