"""Occlusion-aware generator: encode the source, warp its features by the dense motion, decode.

Output modes:
- "decoder" (FOMM): the frame is whatever the decoder paints from the warped, occlusion-masked features.
- "blend": the frame is occlusion · warped source pixels + (1 − occlusion) · decoder. A micro-expression moves
  skin by a pixel or two; a decoder that repaints every pixel blurs such motion away (DESIGN §5a: the pixel
  warp alone beat the decoded frame), so this path keeps the warped pixels wherever the source is visible.
- "warp": the warped source pixels alone (the decoder is not run). Nothing is hidden by a micro-expression, so
  nothing needs painting in self-reenactment; a new face's cheek that the source's motion uncovers is not
  filled either.

`pixel_interpolation` is how the source pixels are sampled for "deformed" (the features are always sampled
bilinearly). Bilinear sampling at a fractional offset is a low-pass filter whose strength follows the offset,
so a sub-pixel motion also blurs the skin texture unevenly, and a flow estimator reads that as motion of its
own; "bicubic" (clamped to [0, 1]) keeps the texture, as the training-free landmark-tps warp does.
"""

from __future__ import annotations

import torch
from torch import nn

from augmenter.model.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, level_features
from augmenter.model.dense_motion import DenseMotionNetwork
from augmenter.model.grid import PADDING_MODES, resize_map, warp

OUTPUT_MODES: tuple[str, ...] = ("decoder", "blend", "warp")
PIXEL_INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")


class OcclusionAwareGenerator(nn.Module):
    """(source image, kp_driving, kp_source) → {prediction (B, 3, H, W) in [0, 1], deformed,
    occlusion_map, …}."""

    def __init__(
        self,
        num_kp: int = 18,
        num_channels: int = 3,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        num_bottleneck_blocks: int = 6,
        output: str = "decoder",
        pixel_interpolation: str = "bilinear",
        dense_motion_params: dict | None = None,
        compat: str = "augmenter",
    ) -> None:
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ValueError(f"generator output {output!r} is not one of {OUTPUT_MODES}")
        if pixel_interpolation not in PIXEL_INTERPOLATIONS:
            raise ValueError(
                f"generator pixel_interpolation {pixel_interpolation!r} is not one of {PIXEL_INTERPOLATIONS}"
            )
        self.output = output
        self.pixel_interpolation = pixel_interpolation
        self.padding_mode = PADDING_MODES[compat]
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, num_channels=num_channels, compat=compat, **(dense_motion_params or {})
        )
        occlusion_head = self.dense_motion_network.occlusion
        if output == "blend" and occlusion_head is not None:
            # Start mostly on the warped pixels (sigmoid(2) ≈ 0.88): the decoder only has to learn what
            # is hidden.
            nn.init.constant_(occlusion_head.bias, 2.0)
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                level_features(block_expansion, max_features, i),
                level_features(block_expansion, max_features, i + 1),
            )
            for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                level_features(block_expansion, max_features, num_down_blocks - i),
                level_features(block_expansion, max_features, num_down_blocks - i - 1),
            )
            for i in range(num_down_blocks)
        )
        bottleneck_features = level_features(block_expansion, max_features, num_down_blocks)
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(bottleneck_features))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """Source features at every level (their sizes guide the decoder); reusable across driving frames."""
        outputs = [self.first(source_image)]
        for block in self.down_blocks:
            outputs.append(block(outputs[-1]))
        return outputs

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: dict[str, torch.Tensor],
        kp_source: dict[str, torch.Tensor],
        source_features: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`source_features` (from `encode`, batch 1 or B) skips re-encoding one source for many driving
        frames."""
        batch = kp_driving["value"].shape[0]
        if source_image.shape[0] != batch:
            source_image = source_image.expand(batch, *source_image.shape[1:])
        motion = self.dense_motion_network(source_image, kp_driving, kp_source)
        deformation = motion["deformation"]
        occlusion = motion.get("occlusion_map")
        deformed = warp(source_image, deformation, self.padding_mode, self.pixel_interpolation)
        if self.pixel_interpolation == "bicubic":  # cubic weights overshoot at edges
            deformed = deformed.clamp(0.0, 1.0)
        out = {
            "deformed": deformed,
            "deformation": deformation,
            "mask": motion["mask"],
            "sparse_deformed": motion["sparse_deformed"],
            **({"occlusion_map": occlusion} if occlusion is not None else {}),
        }
        if self.output == "warp":
            return out | {"prediction": deformed}
        encoded = source_features if source_features is not None else self.encode(source_image)
        decoded = self.decode(encoded, deformation, occlusion, batch)
        if self.output == "blend" and occlusion is not None:
            visible = resize_map(occlusion, *deformed.shape[-2:]).to(deformed.dtype)
            prediction = visible * deformed + (1.0 - visible) * decoded
        else:
            prediction = decoded
        return out | {"prediction": prediction, "decoded": decoded}

    def decode(
        self,
        encoded: list[torch.Tensor],
        deformation: torch.Tensor,
        occlusion: torch.Tensor | None,
        batch: int,
    ) -> torch.Tensor:
        """The frame the decoder paints from the source's deepest features warped by `deformation` and masked
        by the occlusion map (FOMM's output)."""
        features = encoded[-1]
        if features.shape[0] != batch:
            features = features.expand(batch, *features.shape[1:])
        features = warp(features, deformation, self.padding_mode)
        if occlusion is not None:
            features = features * resize_map(occlusion, *features.shape[-2:]).to(features.dtype)
        features = self.bottleneck(features)
        for level, block in enumerate(self.up_blocks):
            features = block(features, size=tuple(encoded[-2 - level].shape[-2:]))
        return torch.sigmoid(self.final(features))
