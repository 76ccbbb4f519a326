"""OFF-ApexNet (Gan et al., 2019): two streams, one for the horizontal, one for the vertical flow component.

Each stream: conv 5×5 (6 filters) → max-pool 2 → conv 5×5 (16 filters) → max-pool 2 on a 28×28 map; the two
flattened streams are concatenated and classified by FC 1024 → dropout 0.5 → FC n_classes (written from the
paper's description).
"""

from __future__ import annotations

import torch
from torch import nn


def _stream() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class OffApexNet(nn.Module):
    """(N, 2, S, S) (u, v) → (N, n_classes) logits."""

    def __init__(
        self, in_channels: int = 2, n_classes: int = 3, input_size: int = 28, hidden: int = 1024
    ) -> None:
        super().__init__()
        if in_channels != 2:
            raise ValueError("OFF-ApexNet takes exactly the two flow components (u, v)")
        self.u_stream, self.v_stream = _stream(), _stream()
        cells = (input_size // 4) ** 2 * 16
        self.head = nn.Sequential(
            nn.Linear(2 * cells, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.u_stream(x[:, 0:1])
        v = self.v_stream(x[:, 1:2])
        return self.head(torch.cat([torch.flatten(u, 1), torch.flatten(v, 1)], dim=1))
