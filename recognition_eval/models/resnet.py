"""A ResNet-18 of our own for flow input (torchvision is not importable beside our torch; see DESIGN §8).

Same topology as torchvision's resnet18 (BasicBlock ×[2, 2, 2, 2], stem conv 7×7/2 + max-pool, global average
pool, one linear layer), with two knobs for small inputs and small machines:
- `width`: channels of the first stage (64 in the paper; 16 by default here so 12 LOSO folds of the demo
  corpus train on 2 CPU cores in about a minute — stages of 16/32/64/128 channels, ~0.7 M parameters;
  measured 5 s per fold of 66 samples × 25 epochs at 64×64);
- `small_input`: a 3×3/1 stem without max-pool for maps of 32² or less (4× the compute at the same size).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual; a 1×1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 over (N, in_channels, S, S) flow maps → (N, n_classes) logits."""

    def __init__(
        self, in_channels: int = 3, n_classes: int = 3, width: int = 16, small_input: bool = False
    ) -> None:
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages = []
        channels = width
        for index, out_channels in enumerate((width, width * 2, width * 4, width * 8)):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1)
                )
            )
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(features, 1))
