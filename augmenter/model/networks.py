"""The three FP-FOMM networks built from one config, kept together so checkpoints name them like FOMM's."""

from __future__ import annotations

from typing import Any

from torch import nn

from augmenter.model.discriminator import MultiScaleDiscriminator
from augmenter.model.generator import OcclusionAwareGenerator
from augmenter.model.keypoint_detector import KPDetector


class Networks(nn.Module):
    """kp_detector + generator (with its dense motion network) + discriminator."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        model = config["model"]
        common = {"num_kp": model["num_kp"], "num_channels": model["num_channels"]}
        self.kp_detector = KPDetector(**common, **model["kp_detector"])
        self.generator = OcclusionAwareGenerator(
            **common, **model["generator"], dense_motion_params=dict(model["dense_motion"])
        )
        discriminator = dict(model["discriminator"])
        scales = tuple(discriminator.pop("scales"))
        self.discriminator = MultiScaleDiscriminator(
            scales, num_channels=model["num_channels"], **discriminator
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
