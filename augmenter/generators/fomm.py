"""FOMM's own layout as a generator: learned keypoints, no facial prior, relative motion (kind "fomm").

The weights users have (first-order-model's vox-cpk.pth.tar: 10 learned keypoints, vox-256 sizes) carry no
config; the layout is read off the tensor shapes and run with the published numerics (compat "fomm"). Motion
transfer is FOMM's relative mode: each target keypoint moves by the source clip's keypoint displacement since
its onset, scaled by the ratio of the keypoint hulls (FOMM's --adapt_scale), and its Jacobian becomes J_d(t) ·
J_d(0)⁻¹ · J_target. The target is encoded once per clip; frames run in chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmenter.devices import resolve_device
from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.generators.motion import check_frame_size, frames_to_tensor, hull_area
from augmenter.model.checkpoint import INFERENCE_NETWORKS, check_fit, config_from_state, load_checkpoint
from augmenter.model.networks import Networks

FOMM_SIZE = 256  # vox-256: the size FOMM's face weights were trained at


class FOMMGenerator:
    """ClipGenerator over FOMM weights (learned keypoints)."""

    kind = "fomm"
    training_free = False

    def __init__(
        self,
        networks: Networks,
        config: dict[str, Any],
        checksum: str,
        training_subjects: tuple[str, ...],
        training_persons: tuple[str, ...],
        device: torch.device,
        chunk_size: int = 16,
        adapt_scale: bool = True,
    ) -> None:
        self.networks = networks.to(device).eval()
        self.config = config
        self.checksum = checksum
        self.training_subjects = training_subjects
        self.training_persons = training_persons
        self.device = device
        self.chunk_size = chunk_size
        self.adapt_scale = adapt_scale
        self.size = int(config["model"]["size"])

    @torch.inference_mode()
    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3): the target moved like each source frame relative to the source's onset."""
        check_frame_size(source, target, self.size)
        kp_detector, generator = self.networks.kp_detector, self.networks.generator
        frames = frames_to_tensor(source.frames, self.device)
        target_image = frames_to_tensor(target.image[None], self.device)
        kp_target = kp_detector(target_image)
        kp_onset = kp_detector(frames[:1])
        scale = 1.0
        if self.adapt_scale:
            target_area = hull_area(kp_target["value"][0].cpu().numpy())
            onset_area = hull_area(kp_onset["value"][0].cpu().numpy())
            scale = float(np.sqrt(target_area / onset_area)) if target_area > 0 and onset_area > 0 else 1.0
        onset_inverse = torch.linalg.inv(kp_onset["jacobian"])
        source_features = generator.encode(target_image)
        outputs = []
        for start in range(0, len(frames), self.chunk_size):
            chunk = frames[start : start + self.chunk_size]
            count = len(chunk)
            kp = kp_detector(chunk)
            kp_driving = {
                "value": kp_target["value"] + scale * (kp["value"] - kp_onset["value"]),
                "jacobian": kp["jacobian"] @ onset_inverse @ kp_target["jacobian"],
            }
            kp_source = {
                "value": kp_target["value"].expand(count, -1, -1),
                "jacobian": kp_target["jacobian"].expand(count, -1, -1, -1),
            }
            out = generator(target_image, kp_driving, kp_source, source_features=source_features)
            outputs.append(out["prediction"].float())
        video = torch.cat(outputs)
        return video.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def fomm_generator(
    networks: Networks,
    config: dict[str, Any],
    payload: dict[str, Any],
    digest: str,
    device: str | torch.device,
) -> FOMMGenerator:
    return FOMMGenerator(
        networks,
        config,
        digest,
        tuple(payload.get("training_subjects", ())),
        tuple(payload.get("training_persons", ())),
        resolve_device(device),
    )


def load_fomm(path: str | Path, device: str | torch.device = "cpu", size: int | None = None) -> FOMMGenerator:
    """FOMM's own checkpoint file (e.g. vox-cpk.pth.tar) as a generator; it records no training subjects, so
    the strict leakage guard treats its training set as unknown."""
    payload, digest = load_checkpoint(path)
    size = FOMM_SIZE if size is None else int(size)
    config = config_from_state(payload, size=size, compat="fomm", source=str(path))
    if config["model"]["kp_detector"]["keypoints"] != "learned":
        raise UserError(
            f"{path}: an FP-FOMM (facial-prior) file, not FOMM's learned-keypoint layout; convert it with "
            "`augmenter checkpoint import` and use the .pt it writes"
        )
    networks = Networks(config)
    check_fit(networks, payload, str(path), config["name"], parts=INFERENCE_NETWORKS)
    for name in INFERENCE_NETWORKS:
        getattr(networks, name).load_state_dict(payload[name], strict=False)
    return fomm_generator(networks, config, payload, digest, device)


def load_fomm_spec(path: Path, device: str = "cpu", size: int | None = None) -> FOMMGenerator:
    """The registry's loader for ".pth.tar" / ".tar" files: FOMM's layout runs at any size its blocks divide
    (default 256, what the published weights were trained at)."""
    return load_fomm(path, device, size)
