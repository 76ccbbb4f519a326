"""The three FP-FOMM networks built from one config, kept together so checkpoints name them like FOMM's."""

from __future__ import annotations

from typing import Any

from torch import nn

from augmenter.model.config import keypoint_mode, model_compat
from augmenter.model.discriminator import MultiScaleDiscriminator
from augmenter.model.generator import OcclusionAwareGenerator
from augmenter.model.keypoint_detector import KPDetector


class Networks(nn.Module):
    """kp_detector + generator (with its dense motion network) + discriminator."""

    def __init__(self, config: dict[str, Any], discriminator: bool = True) -> None:
        """`discriminator=False` leaves it out (shape checks need only what inference runs)."""
        super().__init__()
        model = config["model"]
        self.compat = model_compat(config)
        common = {"num_kp": model["num_kp"], "num_channels": model["num_channels"], "compat": self.compat}
        kp_params = {**model["kp_detector"], "keypoints": keypoint_mode(config)}
        self.kp_detector = KPDetector(**common, **kp_params)
        self.generator = OcclusionAwareGenerator(
            **common, **model["generator"], dense_motion_params=dict(model["dense_motion"])
        )
        if discriminator:
            params = dict(model["discriminator"])
            scales = tuple(params.pop("scales"))
            self.discriminator = MultiScaleDiscriminator(scales, num_channels=model["num_channels"], **params)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
