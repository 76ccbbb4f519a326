"""FP-FOMM inference: move a still target face with a source clip's motion, the whole clip as batched tensors.

Relative motion transfer (FOMM's "relative" mode on FP-FOMM's fixed keypoints): the target's 18 AU points move
by the source's point displacements since onset (tracked, smoothed landmarks; scaled by the ratio of face
sizes) and the Jacobians become J_d(t) · J_d(0)⁻¹ · J_target. The target is encoded once per clip (and kept
for the next clip of the same target); frames run in chunks. A checkpoint with learned keypoints (an imported
FOMM file) is run by augmenter.generators.fomm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmenter.devices import resolve_device  # re-exported: callers import it from here too
from augmenter.errors import UserError
from augmenter.face.prior import au_points_normalized
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.generators.fomm import fomm_generator
from augmenter.generators.motion import check_frame_size, frames_to_tensor, hull_area
from augmenter.model.checkpoint import load_checkpoint
from augmenter.model.config import keypoint_mode, track_method
from augmenter.model.grid import pixels_to_normalized
from augmenter.model.keypoint_detector import keypoint_values
from augmenter.model.networks import Networks
from augmenter.tracks import smooth_tracks, track_points_by_flow


def keypoint_tracks(clip: PreparedClip, config: dict[str, Any]) -> np.ndarray:
    """(T, 68, 2) landmark tracks the model was trained with: the onset everywhere (untracked), or per frame
    from `train.track_method` — "landmarks" (each frame's own fit) or a flow method carrying the onset
    landmarks through the clip — then smoothed over time."""
    landmarks = clip.landmarks
    train = config["train"]
    if not train["tracked_keypoints"]:
        return np.repeat(np.asarray(landmarks[:1], np.float32), len(landmarks), axis=0)
    method = track_method(config)
    if method != "landmarks":
        landmarks = track_points_by_flow(clip.frames, landmarks[0], method)
    return smooth_tracks(landmarks, train["track_sigma_frames"], train["track_dead_band_px"])


# Landmarks the landmark TPS motion moves: dlib's 0–59 (jaw, brows, nose, eyes, outer lips). The inner-lip
# contour 60–67 lies on the outer one when the mouth is closed, and a spline through coincident points that
# move apart is ill-posed.
TPS_LANDMARKS = slice(0, 60)


def uses_landmark_tps(config: dict[str, Any]) -> bool:
    return bool(config["model"]["dense_motion"].get("landmark_tps", False))


def tps_landmarks(tracks: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(..., 68, 2) pixel landmarks → (..., 60, 2) normalised: the points the landmark TPS motion moves."""
    tensor = tracks if isinstance(tracks, torch.Tensor) else torch.from_numpy(np.asarray(tracks))
    return pixels_to_normalized(tensor[..., TPS_LANDMARKS, :].float(), size)


# A target's encoder features (None when no decoder reads them).
_Features = list[torch.Tensor] | None


class FPFOMMGenerator:
    """ClipGenerator over a trained FP-FOMM checkpoint."""

    kind = "fp-fomm"
    training_free = False

    def __init__(
        self,
        networks: Networks,
        config: dict[str, Any],
        checksum: str,
        training_subjects: tuple[str, ...],
        device: torch.device,
        chunk_size: int = 32,
        amp: bool = False,
        training_persons: tuple[str, ...] = (),
    ) -> None:
        self.networks = networks.to(device).eval()
        # bfloat16 autocast, CUDA only (benchmarks/generator_throughput.py measures speed and pixel error)
        self.amp = bool(amp) and device.type == "cuda"
        self.config = config
        self.checksum = checksum
        self.training_subjects = training_subjects
        self.training_persons = training_persons
        self.device = device
        self.chunk_size = chunk_size
        self.size = int(config["model"]["size"])
        self.compat = self.networks.compat
        # The last target's keypoints and encoder features: a plan that gives one target many source clips in
        # a row (one worker, one target) encodes it once.
        self._target_cache: tuple[bytes, bytes, dict[str, torch.Tensor], _Features] | None = None

    def _check(self, source: PreparedClip, target: TargetFace) -> None:
        check_frame_size(source, target, self.size)

    def driving_keypoints(
        self, source: PreparedClip, target: TargetFace, tracks: np.ndarray | None = None
    ) -> torch.Tensor:
        """(T, 18, 2) normalised target points moved by the source's displacement since onset (`tracks`: the
        source's keypoint_tracks when already computed)."""
        if tracks is None:
            tracks = keypoint_tracks(source, self.config)
        return self._moved_target_points(source, target, tracks, au_points_normalized)

    def driving_landmarks(
        self, source: PreparedClip, target: TargetFace, tracks: np.ndarray | None = None
    ) -> torch.Tensor | None:
        """(T, 60, 2) normalised target landmarks moved like the source's, what the landmark TPS motion
        moves; None for a config without that choice."""
        if not uses_landmark_tps(self.config):
            return None
        if tracks is None:
            tracks = keypoint_tracks(source, self.config)
        return self._moved_target_points(source, target, tracks, tps_landmarks)

    def _moved_target_points(
        self,
        source: PreparedClip,
        target: TargetFace,
        tracks: np.ndarray,
        points: Callable[[np.ndarray, int], torch.Tensor],
    ) -> torch.Tensor:
        """The target's `points` (normalised) moved by the source's, scaled by the ratio of face sizes."""
        source_points = points(tracks, self.size)  # (T, K, 2)
        target_points = points(np.asarray(target.landmarks, np.float32), self.size)  # (K, 2)
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
        source_tracks = keypoint_tracks(source, self.config)
        tracks = au_points_normalized(source_tracks, self.size).to(device)
        driving_points = self.driving_keypoints(source, target, source_tracks).to(device)
        driving_landmarks = self.driving_landmarks(source, target, source_tracks)
        target_landmarks = tps_landmarks(target.landmarks, self.size).to(device)[None]
        target_image = frames_to_tensor(target.image[None], device)
        kp_target, source_features = self.encode_target(target, target_image)
        onset_inverse = None
        outputs = []
        for start in range(0, len(frames), self.chunk_size):
            stop = min(start + self.chunk_size, len(frames))
            jacobian = kp_detector(frames[start:stop], tracks[start:stop])["jacobian"].float()
            if onset_inverse is None:
                onset_inverse = torch.linalg.inv(jacobian[:1])
            moved = jacobian @ onset_inverse @ kp_target["jacobian"]
            kp_driving = {
                "value": keypoint_values(driving_points[start:stop], self.size, self.compat),
                "jacobian": moved,
            }
            kp_source = {
                "value": kp_target["value"].expand(stop - start, -1, -1),
                "jacobian": kp_target["jacobian"].expand(stop - start, -1, -1, -1),
            }
            if driving_landmarks is not None:
                kp_driving["landmarks"] = driving_landmarks[start:stop].to(device)
                kp_source["landmarks"] = target_landmarks
            prediction = generator(target_image, kp_driving, kp_source, source_features=source_features)[
                "prediction"
            ]
            outputs.append(prediction.float())
        return torch.cat(outputs)

    def encode_target(
        self, target: TargetFace, target_image: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], _Features]:
        """The target's keypoints and encoder features (None when the frame is the pixel warp alone: no
        decoder reads them), computed once per target and reused while the same target (same pixels and
        landmarks) comes again."""
        image_key = target.image.tobytes() + bytes([self.amp])
        landmark_key = np.asarray(target.landmarks, np.float32).tobytes()
        cached = self._target_cache
        if cached is not None and cached[0] == image_key and cached[1] == landmark_key:
            return cached[2], cached[3]
        target_points = au_points_normalized(target.landmarks, self.size).to(self.device)[None]
        kp_target = self.networks.kp_detector(target_image, target_points)
        kp_target["jacobian"] = kp_target["jacobian"].float()  # inverted later: never in half precision
        generator = self.networks.generator
        features = None if generator.output == "warp" else generator.encode(target_image)
        self._target_cache = (image_key, landmark_key, kp_target, features)
        return kp_target, features


def checkpoint_networks(path: str | Path, payload: dict[str, Any]) -> Networks:
    """The networks of an augmenter checkpoint with its kp_detector and generator weights loaded."""
    if "config" not in payload or "generator" not in payload:
        raise UserError(
            f"{path}: not an augmenter FP-FOMM checkpoint (no config/generator); train one with "
            "`augmenter train` (official FOMM weights: `augmenter checkpoint import FILE --out X.pt`)"
        )
    networks = Networks(payload["config"])
    for name in ("kp_detector", "generator"):
        try:
            getattr(networks, name).load_state_dict(payload[name])
        except RuntimeError as exc:
            raise UserError(
                f"{path}: {name} weights do not fit its own config ({str(exc)[:100]}); "
                "the checkpoint is damaged"
            ) from exc
    return networks


def _from_payload(
    path: str | Path, payload: dict[str, Any], digest: str, device: str | torch.device, amp: bool
) -> FPFOMMGenerator:
    return FPFOMMGenerator(
        checkpoint_networks(path, payload),
        payload["config"],
        digest,
        tuple(payload.get("training_subjects", ())),
        resolve_device(device),
        amp=amp,
        training_persons=tuple(payload.get("training_persons", ())),
    )


def load_fpfomm(path: str | Path, device: str | torch.device = "cpu", amp: bool = False) -> FPFOMMGenerator:
    """An FP-FOMM ClipGenerator from a checkpoint written by `augmenter train` or `augmenter checkpoint
    import` (checksum = its sha256)."""
    payload, digest = load_checkpoint(path)
    return _from_payload(path, payload, digest, device, amp)


def load_fpfomm_spec(path: Path, device: str = "cpu", size: int | None = None) -> Any:
    """The registry's loader for ".pt" checkpoints: a checkpoint carries its size and refuses another; one
    with learned keypoints (an imported FOMM file) becomes the "fomm" generator."""
    payload, digest = load_checkpoint(path)
    if "config" in payload and keypoint_mode(payload["config"]) == "learned":
        networks = checkpoint_networks(path, payload)
        generator = fomm_generator(networks, payload["config"], payload, digest, device)
    else:
        generator = _from_payload(path, payload, digest, device, amp=False)
    if size is not None and generator.size != size:
        raise UserError(
            f"{path}: checkpoint was trained at {generator.size}px but size {size} was asked; "
            f"use --size {generator.size} or another checkpoint"
        )
    return generator
