"""Face crops: one face box per clip, a square crop around it, landmarks fitted inside it.

The box comes from the ONSET frame and is reused for every frame of the clip: micro-expressions are tiny, and
a box re-detected per frame would jitter by more pixels than the expression moves. Landmarks are fitted on the
full-resolution frame inside that fixed box, then mapped into crop pixels, keeping their jitter well under a
pixel at model size. Coordinates follow augmenter.flow: pixel centres at integers, (x, y) = (column, row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox

# Fraction of the (squared) face box added on every side: dlib's boxes cut the forehead and the chin's edge,
# and the generators need some context around the moving skin.
DEFAULT_MARGIN = 0.25
# dlib returns whole-pixel landmarks. Fitting them on the crop region resampled to at least this many pixels
# makes that rounding ~4× finer at 128² output; on the demo corpus it halved the frame-to-frame jitter of
# still points.
LANDMARK_FIT_SIDE = 512
# Frames with a shorter side than this are upscaled for a second detection try (tight face crops).
SMALL_FRAME_SIDE = 256


@dataclass(frozen=True)
class SquareCrop:
    """A square region of a frame (may extend past its borders; those pixels are edge-padded)."""

    left: int
    top: int
    side: int

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Frame pixel coordinates → crop pixel coordinates after resizing the square to size×size."""
        scale = size / self.side
        offset = np.array([self.left, self.top], dtype=np.float64)
        return ((np.asarray(points, np.float64) - offset + 0.5) * scale - 0.5).astype(np.float32)


def square_crop(box: FaceBox, margin: float = DEFAULT_MARGIN) -> SquareCrop:
    """A square centred on the box, its side the box's longer side grown by `margin` on each side."""
    side = max(1, int(round(max(box.width, box.height) * (1.0 + 2.0 * margin))))
    centre_x = (box.left + box.right) / 2.0
    centre_y = (box.top + box.bottom) / 2.0
    return SquareCrop(
        left=int(round(centre_x - side / 2.0)), top=int(round(centre_y - side / 2.0)), side=side
    )


def crop_and_resize(image: np.ndarray, crop: SquareCrop, size: int) -> np.ndarray:
    """uint8 (size, size, 3): the square region, edge-padded where it leaves the frame, area-resampled."""
    height, width = image.shape[:2]
    bottom, right = crop.top + crop.side, crop.left + crop.side
    pad_top, pad_left = max(0, -crop.top), max(0, -crop.left)
    pad_bottom, pad_right = max(0, bottom - height), max(0, right - width)
    region = image[max(0, crop.top) : min(height, bottom), max(0, crop.left) : min(width, right)]
    if pad_top or pad_left or pad_bottom or pad_right:
        region = np.pad(region, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)), mode="edge")
    interpolation = cv2.INTER_AREA if crop.side >= size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interpolation)


def fit_landmarks(
    backend: FaceBackend, image: np.ndarray, box: FaceBox, crop: SquareCrop, size: int
) -> np.ndarray:
    """float32 (68, 2) landmarks of the face in `box`, in crop pixels at size².

    They are fitted on the square crop region resampled to at least LANDMARK_FIT_SIDE px (never below the
    frame's own resolution), so whole-pixel rounding of the detector does not show as sub-pixel jitter.
    """
    points, fit_side = fit_points(backend, image, box, crop)
    return scale_points(points, fit_side, size)


def scale_points(points: np.ndarray, fit_side: int, size: int) -> np.ndarray:
    """Landmarks in pixels of the fit_side² crop → float32 landmarks in pixels of the size² crop."""
    return ((np.asarray(points, np.float64) + 0.5) * (size / fit_side) - 0.5).astype(np.float32)


def fit_points(
    backend: FaceBackend, image: np.ndarray, box: FaceBox, crop: SquareCrop
) -> tuple[np.ndarray, int]:
    """(float64 (68, 2) landmarks in pixels of the crop resampled to fit_side², fit_side): the size-free
    result of the face work, so one fit serves every crop size (see `scale_points`)."""
    fit_side = max(crop.side, LANDMARK_FIT_SIDE)
    region = crop_and_resize(image, crop, fit_side)
    scale = fit_side / crop.side
    fit_box = FaceBox(
        left=int(round((box.left - crop.left) * scale)),
        top=int(round((box.top - crop.top) * scale)),
        right=int(round((box.right - crop.left) * scale)),
        bottom=int(round((box.bottom - crop.top) * scale)),
    )
    return np.asarray(backend.landmarks(region, fit_box), dtype=np.float64), fit_side


def read_rgb(path: str | Path, what: str = "") -> np.ndarray:
    """uint8 (H, W, 3) RGB from any file cv2 reads (grey frames, e.g. SAMM's, get 3 equal channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        context = f" ({what})" if what else ""
        raise UserError(
            f"{path}: unreadable image{context}; check the file or remove the clip from the manifest"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _usable(box: FaceBox | None) -> bool:
    return box is not None and box.width > 1 and box.height > 1


def detect_face(backend: FaceBackend, image: np.ndarray) -> FaceBox | None:
    """The backend's largest face, retried the ways tight face crops need; None when there is no face.

    Registered/cropped datasets (and the demo corpus at 64²) show the face edge to edge: the HOG detector then
    misses it for want of size and context. Retry on the frame upscaled to SMALL_FRAME_SIDE, then on the frame
    edge-padded by half its side; boxes are mapped back to the frame (they may then reach past its border,
    which square_crop pads).
    """
    box = backend.detect(image)
    if _usable(box):
        return box
    height, width = image.shape[:2]
    if min(height, width) < SMALL_FRAME_SIDE:
        factor = int(np.ceil(SMALL_FRAME_SIDE / min(height, width)))
        larger = cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_CUBIC)
        found = backend.detect(larger)
        if _usable(found):
            return FaceBox(
                left=int(round(found.left / factor)),
                top=int(round(found.top / factor)),
                right=int(round(found.right / factor)),
                bottom=int(round(found.bottom / factor)),
            )
    pad = min(height, width) // 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = backend.detect(padded)
    if _usable(found):
        return FaceBox(found.left - pad, found.top - pad, found.right - pad, found.bottom - pad)
    return None


def require_face(backend: FaceBackend, image: np.ndarray, path: Path | str, what: str) -> FaceBox:
    """detect_face, or a UserError naming `path` and `what` the frame is when there is no face."""
    box = detect_face(backend, image)
    if box is None:
        raise UserError(
            f"{path}: no face found by the {backend.name} backend ({what}); use a frame with a visible "
            "frontal face or drop the clip from the manifest"
        )
    return box
