"""landmark-tps: a training-free generator that moves the target by the source's landmark motion (TPS warp).

It is the floor any trained generator must beat, and a usable generator on its own: frame t of the output is
the target image warped by a thin-plate spline that moves the target's 68 landmarks as the source's landmarks
moved from onset to frame t (border points pinned still). Source motion is mapped onto the target face by the
linear part (scale + rotation) of the similarity transform from the source's onset landmarks to the target's,
so a 1 px brow raise on a small face becomes a proportionally larger one on a larger face.

How the source's landmarks move (`tracking`): "dis" (default) carries the onset landmarks along the DIS
optical flow onset → frame t, i.e. it measures the skin's own motion there; "landmarks" uses the per-frame
dlib fits of prepare_clip, whose shape-model response and jitter are of the same size as micro-expression
motion.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.tracks import smooth_tracks, track_points_by_flow
from augmenter.warp import border_points, tps_displacement_fields, warp_forward

KIND = "landmark-tps"
TRACKING_CHOICES: tuple[str, ...] = ("dis", "farneback", "tvl1", "landmarks")
# Defaults chosen on VALIDATION PERSONS by benchmarks/landmark_tps_selection.py: the demo corpus with the
# demo's settings and corpus seed 1, 64² crops, 48 clips of 6 persons (astronaut, grace-hopper, t1-2, t1-5,
# t1-6, tom-hanks); a tracking × σ (0, 1, 2 frames) × dead-band (0, 0.25, 0.5 px) grid, scored by the
# onset → apex face flow EPE (copy-onset 0.284): DIS σ 1 no dead-band 0.092 (best; AU regions 0.101), DIS σ 0
# 0.093, Farnebäck at best 0.100, dlib landmark tracks at best 0.234 (σ 2, dead-band 0.25). Flow tracks
# barely jitter: light smoothing, no dead-band. Reported on the 3 other persons (t1-1, t1-3, t1-4; 24 clips):
# 0.103 [0.083, 0.125] vs copy-onset 0.303 and the demo-oracle ceiling 0.084 (95 % intervals over persons).
DEFAULT_TRACKING = "dis"
DEFAULT_SIGMA_FRAMES = 1.0
DEFAULT_DEAD_BAND_PX = 0.0
DEFAULT_BORDER_POINTS_PER_SIDE = 4
# dead_band_px is given at 128² crops and scales with the source crop (tracking noise in crop pixels grows
# with the crop size: dlib landmarks are fitted at a fixed resolution, augmenter.crops.LANDMARK_FIT_SIDE).
DEAD_BAND_REFERENCE_SIZE = 128


def similarity_linear_part(source_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """float64 (2, 2) scale·rotation of the least-squares similarity transform source → target (Umeyama).

    Only the linear part matters for displacement vectors; translation does not move a vector.
    """
    source = np.asarray(source_points, np.float64)
    target = np.asarray(target_points, np.float64)
    source_centred = source - source.mean(axis=0)
    target_centred = target - target.mean(axis=0)
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance <= 0:
        return np.eye(2)
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections: a face is not mirrored by its own motion
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    return scale * rotation


class LandmarkTPSGenerator:
    """ClipGenerator moving a target face by the source clip's smoothed landmark moves (see module doc)."""

    kind = KIND
    training_subjects: tuple[str, ...] = ()
    training_persons: tuple[str, ...] = ()
    training_free = True

    def __init__(
        self,
        size: int = 128,
        tracking: str = DEFAULT_TRACKING,
        sigma_frames: float = DEFAULT_SIGMA_FRAMES,
        dead_band_px: float = DEFAULT_DEAD_BAND_PX,
        border_points_per_side: int = DEFAULT_BORDER_POINTS_PER_SIDE,
    ) -> None:
        if tracking not in TRACKING_CHOICES:
            raise ValueError(f"unknown tracking {tracking!r}; choose one of {', '.join(TRACKING_CHOICES)}")
        self.size = int(size)
        self.tracking = tracking
        self.sigma_frames = float(sigma_frames)
        self.dead_band_px = float(dead_band_px)
        self.border_points_per_side = int(border_points_per_side)
        settings = {
            "kind": KIND,
            "version": 2,
            "tracking": self.tracking,
            "sigma_frames": self.sigma_frames,
            "dead_band_px": self.dead_band_px,
            "border_points_per_side": self.border_points_per_side,
        }
        # Size is left out: the same settings give the same motion at any resolution.
        self.checksum = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def source_tracks(self, source: PreparedClip) -> np.ndarray:
        """float32 (T, 68, 2) source landmark positions per frame, by the configured tracking."""
        if self.tracking == "landmarks":
            return np.asarray(source.landmarks, np.float32)
        return track_points_by_flow(source.frames, source.landmarks[0], self.tracking)  # type: ignore[arg-type]

    def target_displacements(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """float64 (T, 68, 2): where each target landmark moves at frame t, relative to the onset."""
        dead_band = self.dead_band_px * source.frames.shape[1] / DEAD_BAND_REFERENCE_SIZE
        tracks = smooth_tracks(self.source_tracks(source), self.sigma_frames, dead_band).astype(np.float64)
        moves = tracks - tracks[:1]
        linear = similarity_linear_part(tracks[0], target.landmarks)
        return moves @ linear.T

    def displacement_fields(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """float32 (T, H, W, 2) forward displacement of the target image per frame (onset = zero field)."""
        height, width = target.image.shape[:2]
        border = border_points((height, width), self.border_points_per_side)
        control = np.concatenate([np.asarray(target.landmarks, np.float64), border])
        moves = self.target_displacements(source, target)
        moves = np.concatenate([moves, np.zeros((moves.shape[0], len(border), 2))], axis=1)
        return tps_displacement_fields(control, moves, (height, width))

    def animate(self, source: PreparedClip, target: TargetFace) -> np.ndarray:
        """uint8 (T, H, W, 3), H and W the target's: the target moved like the source, frame by frame."""
        if source.landmarks.shape[0] != source.frames.shape[0]:
            raise ValueError(
                f"{source.key}: {source.landmarks.shape[0]} landmark frames for {source.frames.shape[0]}"
            )
        fields = self.displacement_fields(source, target)
        frames = np.empty((fields.shape[0], *target.image.shape), dtype=np.uint8)
        frames[0] = target.image
        for index in range(1, fields.shape[0]):
            frames[index] = warp_forward(target.image, fields[index])
        return frames


def build_landmark_tps(
    argument: str | None = None, device: str = "cpu", size: int | None = None
) -> LandmarkTPSGenerator:
    """The registry's factory: landmark-tps at `size` (default 128); numpy only, so `device` is ignored."""
    if argument:
        raise ValueError(f"landmark-tps takes no argument (got {argument!r})")
    return LandmarkTPSGenerator() if size is None else LandmarkTPSGenerator(size=size)
