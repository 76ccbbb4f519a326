"""FP-FOMM inference: move a still target face with a source clip's motion, the whole clip as batched tensors.

Relative motion transfer (FOMM's "relative" mode on FP-FOMM's fixed keypoints): the target's 18 AU points move
by the source's point displacements since onset (tracked, smoothed landmarks; scaled by the ratio of face
sizes) and the Jacobians become J_d(t) · J_d(0)⁻¹ · J_target. The target is encoded once; frames run in
chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from augmenter.errors import UserError
from augmenter.face.prior import au_points_normalized
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.model.checkpoint import load_checkpoint
from augmenter.model.networks import Networks
from augmenter.prepare import smooth_tracks


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" → CUDA when present, else CPU; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hull_area(points: np.ndarray) -> float:
    try:
        return float(ConvexHull(np.asarray(points, np.float64)).volume)
    except (QhullError, ValueError):
        return 0.0


def keypoint_tracks(landmarks: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """(T, 68, 2) landmarks → tracks the model was trained with: smoothed per frame, or the onset
    everywhere."""
    train = config["train"]
    if train["tracked_keypoints"]:
        return smooth_tracks(landmarks, train["track_sigma_frames"], train["track_dead_band_px"])
    return np.repeat(np.asarray(landmarks[:1], np.float32), len(landmarks), axis=0)


def frames_to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (T, S, S, 3) → float (T, 3, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class FPFOMMGenerator:
    """ClipGenerator over a trained FP-FOMM checkpoint."""

    kind = "fp-fomm"

    def __init__(
        self,
        networks: Networks,
        config: dict[str, Any],
        checksum: str,
        training_subjects: tuple[str, ...],
        device: torch.device,
        chunk_size: int = 32,
        amp: bool = False,
    ) -> None:
        self.networks = networks.to(device).eval()
        # bfloat16 autocast, CUDA only (benchmarks/generator_throughput.py measures speed and pixel error)
        self.amp = bool(amp) and device.type == "cuda"
        self.config = config
        self.checksum = checksum
        self.training_subjects = training_subjects
        self.device = device
        self.chunk_size = chunk_size
        self.size = int(config["model"]["size"])

    def _check(self, source: PreparedClip, target: TargetFace) -> None:
        if source.frames.shape[1:3] != (self.size, self.size) or target.image.shape[:2] != (
            self.size,
            self.size,
        ):
            raise UserError(
                f"{source.key} → {target.key}: clip {source.frames.shape[1:3]} / target "
                f"{target.image.shape[:2]} "
                f"do not match the checkpoint's size {self.size}; prepare them at --size {self.size}"
            )

    def driving_keypoints(self, source: PreparedClip, target: TargetFace) -> torch.Tensor:
        """(T, 18, 2) normalised target points moved by the source's displacement since onset."""
        tracks = keypoint_tracks(source.landmarks, self.config)
        source_points = au_points_normalized(tracks, self.size)  # (T, 18, 2)
        target_points = au_points_normalized(target.landmarks, self.size)  # (18, 2)
        source_area, target_area = hull_area(source.landmarks[0]), hull_area(target.landmarks)
        scale = float(np.sqrt(target_area / source_area)) if source_area > 0 and target_area > 0 else 1.0
        return target_points[None] + scale * (source_points - source_points[:1])

    @torch.inference_mode()
    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, S, S, 3): the target moved like each source frame relative to the source's onset."""
        self._check(source, target)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            video = self._animate(source, target)
        return video.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _animate(self, source: PreparedClip, target: TargetFace) -> torch.Tensor:
        device = self.device
        kp_detector, generator = self.networks.kp_detector, self.networks.generator
        frames = frames_to_tensor(source.frames, device)
        tracks = au_points_normalized(keypoint_tracks(source.landmarks, self.config), self.size).to(device)
        driving_points = self.driving_keypoints(source, target).to(device)
        target_image = frames_to_tensor(target.image[None], device)
        target_points = au_points_normalized(target.landmarks, self.size).to(device)[None]
        kp_target = kp_detector(target_image, target_points)
        kp_target["jacobian"] = kp_target["jacobian"].float()  # inverted below: never in half precision
        source_features = generator.encode(target_image)
        onset_inverse = None
        outputs = []
        for start in range(0, len(frames), self.chunk_size):
            stop = min(start + self.chunk_size, len(frames))
            jacobian = kp_detector(frames[start:stop], tracks[start:stop])["jacobian"].float()
            if onset_inverse is None:
                onset_inverse = torch.linalg.inv(jacobian[:1])
            moved = jacobian @ onset_inverse @ kp_target["jacobian"]
            kp_driving = {"value": driving_points[start:stop], "jacobian": moved}
            kp_source = {
                "value": target_points.expand(stop - start, -1, -1),
                "jacobian": kp_target["jacobian"].expand(stop - start, -1, -1, -1),
            }
            prediction = generator(target_image, kp_driving, kp_source, source_features=source_features)[
                "prediction"
            ]
            outputs.append(prediction.float())
        return torch.cat(outputs)


def load_fpfomm(path: str | Path, device: str | torch.device = "cpu", amp: bool = False) -> FPFOMMGenerator:
    """An FP-FOMM ClipGenerator from a checkpoint written by `augmenter train` (checksum = its sha256)."""
    payload, digest = load_checkpoint(path)
    if "config" not in payload or "generator" not in payload:
        raise UserError(
            f"{path}: not an augmenter FP-FOMM checkpoint (no config/generator); train one with "
            "`augmenter train` (official FOMM weights: import them with augmenter.model.checkpoint)"
        )
    config = payload["config"]
    networks = Networks(config)
    for name in ("kp_detector", "generator"):
        try:
            getattr(networks, name).load_state_dict(payload[name])
        except RuntimeError as exc:
            raise UserError(
                f"{path}: {name} weights do not fit its own config ({str(exc)[:100]}); "
                "the checkpoint is damaged"
            ) from exc
    return FPFOMMGenerator(
        networks,
        config,
        digest,
        tuple(payload.get("training_subjects", ())),
        resolve_device(device),
        amp=amp,
    )


def load_fpfomm_spec(path: Path, device: str = "cpu", size: int | None = None) -> FPFOMMGenerator:
    """The registry's loader for ".pt" checkpoints: a checkpoint carries its size and refuses another."""
    generator = load_fpfomm(path, device)
    if size is not None and generator.size != size:
        raise UserError(
            f"{path}: checkpoint was trained at {generator.size}px but size {size} was asked; "
            f"use --size {generator.size} or another checkpoint"
        )
    return generator
