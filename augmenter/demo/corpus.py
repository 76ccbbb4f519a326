"""The demo corpus: real faces moved by FACS-faithful micro-movements, written exactly like CASME II.

Why: the real ME datasets are licensed and cannot ship, yet every stage (readers, manifest, generator
training, recognition) must run end to end in CI and in a first-time user's hands. The corpus uses the real
CASME II layout (`CASME2_RAW_selected/subNN/EPxx_yy/imgN.jpg`, frames numbered from the onset, not from 1)
and a sheet in the real 2019 coding format, so the same readers load it unchanged. Extra columns to the
right of the real ones, and a `demo-truth.json` sidecar, record what was generated (true AUs, amplitude,
landmarks, distractors) for tests.

Motion model. For each AU, dlib's 68 landmarks (plus two virtual cheek points) get FACS displacement
directions (`AU_MOVES`). A dense field spreads them over the skin with normalised Gaussian weights,
``D(x) = Σ w_i(x) d_i / (Σ w_i(x) + c)`` with ``w_i = exp(-|x - p_i|² / 2σ²)``: unmoved landmarks pin the skin
(d_i = 0) and the constant c makes motion fade to zero away from every landmark. The field is scaled so the
largest displacement at a moved landmark equals the clip's amplitude (1–4 px at 128², proportional to size).

Grid convention (one for the whole project, see augmenter/flow.py): D(p) is the forward displacement of the
skin at p, i.e. content at p appears at p + D(p). Frames are rendered by backward sampling with cv2.remap,
``frame(x) = face(m(x))`` where m inverts p ↦ p + D(p) (a few fixed-point steps, `inverse_map`; plain
x − D(x) would be off by |D|·|∇D|, up to ~0.5 px here). So the optical flow from the onset frame to the apex
frame, read at a landmark p, estimates D(p) as recorded in demo-truth.json.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from augmenter.errors import UserError
from augmenter.face.landmarks68 import LEFT_EYE, RIGHT_EYE

RAW_FOLDER = "CASME2_RAW_selected"
ANNOTATION_FILE = "CASME2-coding-demo.xlsx"
TRUTH_FILE = "demo-truth.json"
SHEET_NAME = "Sheet1"
# The header of the real CASME2-coding-20190701.xlsx, column for column (two blank columns included).
CASME2_HEADER: tuple[str | None, ...] = (
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
)
# What was generated, to the right of the real columns (readers ignore unknown columns).
DEMO_HEADER: tuple[str, ...] = (
    "Demo Identity",
    "Demo Variant",
    "Demo AUs",
    "Demo Label3",
    "Demo Amplitude px",
    "Demo Onset",
    "Demo Apex",
    "Demo Offset",
    "Demo Distractors",
)
REFERENCE_SIZE = 128  # amplitudes and distractor strengths are given at 128² and scale with the frame size
AMPLITUDE_PX = (1.0, 4.0)
JPEG_QUALITY = 92
# Distractors. With these, LOSO logistic regression on an 8×8 grid of onset→apex TV-L1 flow scores 0.92
# accuracy on the default corpus: learnable, not trivial. Raise WEAK_AU_* to make the corpus harder.
BLINK_PROBABILITY = 0.35
WEAK_AU_PROBABILITY = 0.5  # an unrelated AU co-occurring near the apex
WEAK_AU_GAIN = (0.3, 0.8)  # its amplitude relative to the clip's
JITTER_PX = (0.05, 0.3)  # RMS head jitter at 128²
NOISE_SIGMA = (1.0, 3.0)  # sensor noise, grey levels
LIGHT_DRIFT = 0.04  # largest relative gain change (global and left-right) over a clip
INVERSE_ITERATIONS = 8  # fixed-point steps inverting D (worst residual measured: 0.06 px at 4 px, 128²)
WARM_ITERATIONS = 3  # the same, started from the previous frame's inverse
SIGMA_FRACTION = 0.2  # spatial reach of a moved landmark, as a fraction of the inter-ocular distance
FIXED_TIMESTAMP = (
    2019,
    7,
    1,
    0,
    0,
    0,
)  # zip entry times and workbook dates, so the sheet's bytes are reproducible

# (label3, AU string as CASME II writes it, CASME II emotion word, objective class as the 2019 sheet gives
# it for these AUs). Negative uses disgust/repression, the words MEGC 2019 maps to "negative" for CASME II.
RECIPES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "negative": (
        ("4", "disgust", 3),
        ("4+7", "disgust", 3),
        ("14", "repression", 7),
        ("15", "repression", 5),
    ),
    "positive": (("12", "happiness", 1), ("6+12", "happiness", 1)),
    "surprise": (("1+2", "surprise", 2), ("1+2+5", "surprise", 2)),
}
CHEEK_LEFT, CHEEK_RIGHT = 68, 69  # virtual control points appended after the 68 landmarks

# AU → {point: (outward, vertical)}; outward > 0 moves away from the face midline, vertical > 0 moves down
# (image rows). Relative weights only: each clip's field is rescaled to its amplitude. After DESIGN §9 / FACS.
AU_MOVES: dict[int, dict[int, tuple[float, float]]] = {
    1: {20: (0.0, -0.7), 21: (0.0, -1.0), 22: (0.0, -1.0), 23: (0.0, -0.7)},
    2: {17: (0.0, -0.8), 18: (0.0, -1.0), 19: (0.0, -0.5), 24: (0.0, -0.5), 25: (0.0, -1.0), 26: (0.0, -0.8)},
    4: {
        **{i: (-0.25, 0.9) for i in (18, 19, 24, 25)},
        **{i: (-0.5, 1.0) for i in (20, 21, 22, 23)},
    },
    5: {i: (0.0, -1.0) for i in (37, 38, 43, 44)},
    6: {**{i: (0.0, -0.6) for i in (40, 41, 46, 47)}, CHEEK_LEFT: (0.15, -1.0), CHEEK_RIGHT: (0.15, -1.0)},
    7: {**{i: (0.0, -1.0) for i in (40, 41, 46, 47)}, **{i: (0.0, 0.35) for i in (37, 38, 43, 44)}},
    12: {48: (0.8, -0.6), 54: (0.8, -0.6), **{i: (0.3, -0.25) for i in (49, 53, 55, 59)}},
    14: {48: (-1.0, -0.1), 54: (-1.0, -0.1), **{i: (-0.3, 0.0) for i in (49, 53, 55, 59)}},
    15: {48: (0.1, 1.0), 54: (0.1, 1.0), 55: (0.0, 0.5), 59: (0.0, 0.5)},
    17: {56: (0.0, -0.8), 57: (0.0, -0.8), 58: (0.0, -0.8), 7: (0.0, -0.9), 8: (0.0, -1.0), 9: (0.0, -0.9)},
    25: {56: (0.0, 1.0), 57: (0.0, 1.0), 58: (0.0, 1.0), 55: (0.0, 0.5), 59: (0.0, 0.5), 51: (0.0, -0.3)},
}
# Inner-lip points follow the outer lip so that a moving lip is not pinned by its own inner contour.
INNER_LIP_FOLLOWS: dict[int, int] = {60: 48, 61: 50, 62: 51, 63: 52, 64: 54, 65: 56, 66: 57, 67: 58}


@dataclass(frozen=True)
class DemoCorpus:
    """Where `make_demo_corpus` wrote: `root` is the dataset root a manifest's paths are relative to."""

    root: Path
    annotations: Path
    truth: Path
    clips: int
    seconds: float


@dataclass
class ClipTruth:
    """Everything generated for one clip (one row of the sheet, one entry of demo-truth.json)."""

    subject: str
    filename: str
    identity: str
    variant: str
    aus: str
    emotion: str
    label3: str
    objective_class: int
    amplitude_px: float
    onset: int
    apex: int
    offset: int
    landmarks_onset: list[list[float]]  # (68, 2) x, y in frame pixels, before any motion
    apex_displacement: list[
        list[float]
    ]  # (68, 2) the AU field D at each landmark at the apex (no distractors)
    apex_global_shift: list[float]  # head jitter at the apex minus at the onset (x, y) px
    distractors: dict = field(default_factory=dict)


# --- motion fields ---


def control_points(landmarks: np.ndarray) -> np.ndarray:
    """The 68 landmarks plus two cheek points (mid-cheek, under each eye), (70, 2)."""
    points = np.asarray(landmarks, np.float32)
    cheek_left = (points[41] + points[31] + points[2]) / 3.0
    cheek_right = (points[46] + points[35] + points[14]) / 3.0
    return np.vstack([points, cheek_left, cheek_right]).astype(np.float32)


def au_vectors(landmarks: np.ndarray, aus: tuple[int, ...]) -> np.ndarray:
    """Unscaled displacement (dx, dy) at each control point for a set of AUs, (70, 2)."""
    points = control_points(landmarks)
    midline = float(np.mean(points[27:31, 0]))
    vectors = np.zeros_like(points)
    for au in aus:
        if au not in AU_MOVES:
            raise ValueError(f"AU {au} has no motion model; known: {sorted(AU_MOVES)}")
        for index, (outward, vertical) in AU_MOVES[au].items():
            side = 1.0 if points[index, 0] >= midline else -1.0
            vectors[index] += (outward * side, vertical)
    for inner, outer in INNER_LIP_FOLLOWS.items():
        if not vectors[inner].any():
            vectors[inner] = vectors[outer]
    return vectors


def smoothing_sigma(landmarks: np.ndarray) -> float:
    """Spatial reach of a moved point (SIGMA_FRACTION of the inter-ocular distance, ≈ 8 px at 128²)."""
    points = np.asarray(landmarks, np.float32)
    inter_ocular = float(np.linalg.norm(points[list(LEFT_EYE)].mean(0) - points[list(RIGHT_EYE)].mean(0)))
    return max(SIGMA_FRACTION * inter_ocular, 1.0)


def gaussian_field(
    points: np.ndarray, vectors: np.ndarray, shape: tuple[int, int], sigma: float, background: float = 0.15
) -> np.ndarray:
    """Dense (H, W, 2) field from control-point vectors (module docstring: normalised Gaussian weights)."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    numerator = np.zeros((height, width, 2), np.float32)
    denominator = np.full((height, width), background, np.float32)
    reach = 4.0 * sigma  # beyond 4σ a weight is < 4e-4: skip the work
    for (px, py), vector in zip(points, vectors, strict=True):
        x0, x1 = max(int(px - reach), 0), min(int(px + reach) + 2, width)
        y0, y1 = max(int(py - reach), 0), min(int(py + reach) + 2, height)
        if x0 >= x1 or y0 >= y1:
            continue
        window = (slice(y0, y1), slice(x0, x1))
        weight = np.exp(-((xs[window] - px) ** 2 + (ys[window] - py) ** 2) / (2.0 * sigma * sigma))
        denominator[window] += weight
        if vector.any():
            numerator[window] += weight[..., None] * vector
    return numerator / denominator[..., None]


def field_at(field_map: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a (H, W, 2) field at (x, y) points, (N, 2)."""
    maps = np.asarray(points, np.float32)
    sampled = [
        cv2.remap(
            np.ascontiguousarray(field_map[..., c]),
            maps[:, 0].reshape(-1, 1),
            maps[:, 1].reshape(-1, 1),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).ravel()
        for c in range(2)
    ]
    return np.stack(sampled, axis=1)


def au_field(landmarks: np.ndarray, aus: tuple[int, ...], amplitude: float, size: int) -> np.ndarray:
    """The apex displacement field of a clip: largest landmark displacement == `amplitude` px."""
    points = control_points(landmarks)
    vectors = au_vectors(landmarks, aus)
    dense = gaussian_field(points, vectors, (size, size), smoothing_sigma(landmarks))
    moved = np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)
    peak = float(np.linalg.norm(field_at(dense, points[moved]), axis=1).max())
    return dense * np.float32(amplitude / max(peak, 1e-6))


def blink_field(landmarks: np.ndarray, size: int) -> np.ndarray:
    """A partial blink at full strength: upper lids down by 60% of the eye opening, lower lids up a little."""
    points = control_points(landmarks)
    vectors = np.zeros_like(points)
    opening = float(np.mean(points[[41, 40, 47, 46], 1] - points[[37, 38, 43, 44], 1]))
    for upper in (37, 38, 43, 44):
        vectors[upper] = (0.0, 0.6 * max(opening, 1.0))
    for lower in (40, 41, 46, 47):
        vectors[lower] = (0.0, -0.1 * max(opening, 1.0))
    return gaussian_field(points, vectors, (size, size), 0.6 * smoothing_sigma(landmarks))


def temporal_profile(n_frames: int, apex_index: int, residual: float = 0.1) -> np.ndarray:
    """0 at the onset, 1 at the apex (raised-cosine rise), back down to `residual` at the offset frame."""
    t = np.arange(n_frames, dtype=np.float64)
    profile = np.empty(n_frames)
    rise = t <= apex_index
    profile[rise] = 0.5 - 0.5 * np.cos(np.pi * t[rise] / max(apex_index, 1))
    fall_length = max(n_frames - 1 - apex_index, 1)
    fall = ~rise
    profile[fall] = residual + (1 - residual) * (
        0.5 + 0.5 * np.cos(np.pi * (t[fall] - apex_index) / fall_length)
    )
    return profile.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n_frames: int, scale: float) -> np.ndarray:
    """A slow random (T, 2) trajectory with RMS `scale`: head jitter, not white noise."""
    raw = rng.normal(size=(n_frames + 16, 2))
    kernel = np.hanning(15)
    kernel /= kernel.sum()
    smooth = np.stack([np.convolve(raw[:, c], kernel, mode="same") for c in range(2)], axis=1)[
        8 : 8 + n_frames
    ]
    smooth -= smooth.mean(axis=0)
    rms = float(np.sqrt((smooth**2).sum(axis=1).mean()))
    return (smooth * (scale / max(rms, 1e-9))).astype(np.float32)


# --- clip rendering ---


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float32 pixel coordinates (x, y); cached because every frame needs it."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.stack([xs, ys], axis=-1)
    grid.flags.writeable = False
    return grid


def inverse_map(
    displacement: np.ndarray, start: np.ndarray | None = None, iterations: int = INVERSE_ITERATIONS
) -> np.ndarray:
    """Sampling positions m(x) with m(x) + D(m(x)) = x, i.e. where each output pixel's content comes from.

    Fixed-point iteration m ← x − D(m), started at `start` (the previous frame's answer, which is close)
    or at x − D(x); it converges because |∇D| < 1 for these fields (Jacobian determinant measured ≥ 0.4).
    """
    grid = _pixel_grid(*displacement.shape[:2])
    positions = grid - displacement if start is None else start
    for _ in range(iterations):
        sampled = cv2.remap(
            displacement,
            positions[..., 0],
            positions[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        positions = grid - sampled
    return positions


def warp(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sample `image` at `positions` (from `inverse_map`): content at p moves to p + D(p)."""
    return cv2.remap(
        image,
        np.ascontiguousarray(positions[..., 0]),
        np.ascontiguousarray(positions[..., 1]),
        interpolation=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT101,
    )


@dataclass(frozen=True)
class ClipPlan:
    """The random choices of one clip, drawn up front so rendering is a pure function of them."""

    aus: tuple[int, ...]
    amplitude_px: float
    n_frames: int
    apex_index: int
    blink_start: int | None
    blink_frames: int
    weak_au: int | None
    weak_gain: float
    jitter_px: float
    noise_sigma: float
    light_gain: float
    light_tilt: float


def plan_clip(rng: np.random.Generator, aus: tuple[int, ...], size: int, frames: tuple[int, int]) -> ClipPlan:
    """Draw amplitude, timing and distractors for one clip (all strengths scale with size / 128)."""
    scale = size / REFERENCE_SIZE
    n_frames = int(rng.integers(frames[0], frames[1] + 1))
    apex_index = int(round(rng.uniform(0.25, 0.5) * (n_frames - 1)))
    blink = rng.random() < BLINK_PROBABILITY
    blink_frames = int(rng.integers(6, 12))
    blink_start = int(rng.integers(0, max(n_frames - blink_frames, 1))) if blink else None
    others = [au for au in AU_MOVES if au not in aus and au != 25]
    weak = rng.random() < WEAK_AU_PROBABILITY
    weak_au = int(rng.choice(others)) if weak else None
    return ClipPlan(
        aus=aus,
        amplitude_px=float(rng.uniform(*AMPLITUDE_PX) * scale),
        n_frames=n_frames,
        apex_index=apex_index,
        blink_start=blink_start,
        blink_frames=blink_frames,
        weak_au=weak_au,
        weak_gain=float(rng.uniform(*WEAK_AU_GAIN)),
        jitter_px=float(rng.uniform(*JITTER_PX) * scale),
        noise_sigma=float(rng.uniform(*NOISE_SIGMA)),
        light_gain=float(rng.uniform(-LIGHT_DRIFT, LIGHT_DRIFT)),
        light_tilt=float(rng.uniform(-LIGHT_DRIFT, LIGHT_DRIFT)),
    )


def render_clip(
    face_image: np.ndarray, landmarks: np.ndarray, plan: ClipPlan, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """uint8 (T, S, S, 3) frames of one clip and the ground truth of its motion.

    Motion per frame t: D_t = profile(t)·D_AU + blink(t)·D_blink + weak(t)·D_weakAU + jitter(t); then lighting
    drift (global gain and a left-right tilt), then Gaussian sensor noise. `rng` only draws the noise/jitter.
    """
    size = face_image.shape[0]
    n = plan.n_frames
    main = au_field(landmarks, plan.aus, plan.amplitude_px, size)
    profile = temporal_profile(n, plan.apex_index)
    blink = blink_field(landmarks, size) if plan.blink_start is not None else None
    blink_profile = np.zeros(n, np.float32)
    if plan.blink_start is not None:
        span = np.arange(plan.blink_frames)
        stop = min(plan.blink_start + plan.blink_frames, n)
        blink_profile[plan.blink_start : stop] = np.sin(np.pi * (span + 0.5) / plan.blink_frames)[
            : stop - plan.blink_start
        ]
    weak = None
    weak_profile = np.zeros(n, np.float32)
    if plan.weak_au is not None:
        weak = au_field(landmarks, (plan.weak_au,), plan.amplitude_px * plan.weak_gain, size)
        # An unrelated AU peaking near the apex (co-occurring motion, as in real clips) confuses the classes.
        weak_apex = int(np.clip(plan.apex_index + rng.integers(-3, 4), 1, n - 1))
        weak_profile = temporal_profile(n, weak_apex, residual=0.0)
    jitter = _smooth_noise(rng, n, plan.jitter_px)
    jitter -= jitter[0]  # the onset frame is the undisturbed photo; jitter is relative to it
    xs = (np.arange(size, dtype=np.float32) / max(size - 1, 1) - 0.5)[None, :, None]
    face = face_image.astype(np.float32)
    frames = np.empty((n, size, size, 3), np.uint8)
    positions: np.ndarray | None = None  # warm start of the inverse map: consecutive frames differ little
    for t in range(n):
        displacement = profile[t] * main + jitter[t]
        if blink is not None and blink_profile[t] > 0:
            displacement = displacement + blink_profile[t] * blink
        if weak is not None:
            displacement = displacement + weak_profile[t] * weak
        positions = inverse_map(
            displacement, positions, WARM_ITERATIONS if positions is not None else INVERSE_ITERATIONS
        )
        moved = warp(face, positions)
        tau = t / max(n - 1, 1)
        moved *= 1.0 + plan.light_gain * tau + plan.light_tilt * tau * 2.0 * xs
        moved += rng.normal(0.0, plan.noise_sigma, size=moved.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    truth = {
        "apex_displacement": field_at(main, landmarks).round(4).tolist(),
        "apex_global_shift": jitter[plan.apex_index].round(4).tolist(),
    }
    return frames, truth


# --- writing ---


def _encode_jpeg(frame: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def _write_clip_atomically(folder: Path, frames: np.ndarray, first_number: int) -> None:
    """Write a clip into a temporary sibling folder, then rename: a killed run never leaves half a clip."""
    staging = folder.with_name(f".{folder.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for index, frame in enumerate(frames):
        (staging / f"img{first_number + index}.jpg").write_bytes(_encode_jpeg(frame))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def _reproducible_xlsx(raw: bytes) -> bytes:
    """Re-zip a workbook with fixed entry times and document dates: same corpus, same bytes."""
    stamp = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(*FIXED_TIMESTAMP)
    source = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                text = data.decode("utf-8")
                text = re.sub(
                    r"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)", rf"\g<1>{stamp}\g<3>", text
                )
                data = text.encode("utf-8")
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIMESTAMP)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            target.writestr(entry, data)
    return out.getvalue()


def write_casme2_sheet(rows: list[ClipTruth], path: Path) -> Path:
    """The annotation sheet in the real CASME II 2019 format (+ demo columns), written atomically.

    Cell types follow the real file: Subject is text ("01", format "@"), frames are ints, a single AU is an
    int and a combination a string ("4+7"), Objective Classes an int.
    """
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = SHEET_NAME
    sheet.append(list(CASME2_HEADER) + list(DEMO_HEADER))
    for row in rows:
        au_cell: int | str = int(row.aus) if row.aus.isdigit() else row.aus
        distractors = ";".join(f"{key}={value}" for key, value in row.distractors.items())
        sheet.append(
            [
                row.subject,
                row.filename,
                None,
                row.onset,
                row.apex,
                row.offset,
                None,
                au_cell,
                row.emotion,
                row.objective_class,
                row.identity,
                row.variant,
                row.aus,
                row.label3,
                round(row.amplitude_px, 3),
                row.onset,
                row.apex,
                row.offset,
                distractors,
            ]
        )
        sheet.cell(row=sheet.max_row, column=1).number_format = "@"
    fixed = datetime.datetime(*FIXED_TIMESTAMP)
    workbook.properties.created = fixed
    workbook.properties.modified = fixed
    buffer = io.BytesIO()
    workbook.save(buffer)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(_reproducible_xlsx(buffer.getvalue()))
    temporary.replace(path)
    return path


def _write_json_atomically(data: object, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


def _clip_names(rng: np.random.Generator, count: int) -> list[str]:
    """Unique CASME II-style clip names (EP02_01f style: episode, take, optional 'f')."""
    names: list[str] = []
    while len(names) < count:
        name = f"EP{int(rng.integers(1, 20)):02d}_{int(rng.integers(1, 10)):02d}" + (
            "f" if rng.random() < 0.3 else ""
        )
        if name.rstrip("f") not in {existing.rstrip("f") for existing in names}:
            names.append(name)
    return sorted(names)


def make_demo_corpus(
    out: Path,
    subjects: int = 12,
    clips_per_subject: int = 6,
    size: int = 128,
    seed: int = 0,
    frames: tuple[int, int] = (30, 60),
    progress: Callable[[int, int], None] | None = None,
) -> DemoCorpus:
    """Generate the demo corpus under `out` (see the module docstring); same arguments → identical bytes.

    Classes are balanced per subject (clip i is negative/positive/surprise by i mod 3, AU recipe drawn
    within the class). `progress(done, total)` is called after each clip. Rewriting an existing corpus
    replaces it clip by clip (each clip and the sheet are written atomically).
    """
    if subjects < 1 or clips_per_subject < 1:
        raise UserError("demo-data: --subjects and --clips-per-subject must be at least 1")
    if size < 48:
        raise UserError(f"demo-data: --size {size} is too small for 68 landmarks; use 48 or more")
    if not 4 <= frames[0] <= frames[1]:
        raise UserError(f"demo-data: frame range {frames} must satisfy 4 <= min <= max")
    from augmenter.demo_faces import demo_faces
    from augmenter.face import get_face_backend

    started = time.perf_counter()
    out = Path(out)
    raw_root = out / RAW_FOLDER
    raw_root.mkdir(parents=True, exist_ok=True)
    faces = demo_faces(subjects, size, get_face_backend("dlib"))
    classes = tuple(RECIPES)
    rows: list[ClipTruth] = []
    total = subjects * clips_per_subject
    for subject_index, face in enumerate(faces):
        subject = f"{subject_index + 1:02d}"
        names = _clip_names(np.random.default_rng([seed, subject_index, 0]), clips_per_subject)
        for clip_index, name in enumerate(names):
            rng = np.random.default_rng([seed, subject_index, clip_index + 1])
            label3 = classes[(clip_index + subject_index) % len(classes)]
            au_text, emotion, objective = RECIPES[label3][int(rng.integers(len(RECIPES[label3])))]
            aus = tuple(int(a) for a in au_text.split("+"))
            plan = plan_clip(rng, aus, size, frames)
            clip_frames, motion = render_clip(face.image, face.landmarks, plan, rng)
            onset = int(rng.integers(10, 400))
            _write_clip_atomically(raw_root / f"sub{subject}" / name, clip_frames, onset)
            distractors = {
                "blink_frame": None if plan.blink_start is None else onset + plan.blink_start,
                "weak_au": plan.weak_au,
                "weak_gain": round(plan.weak_gain, 3),
                "jitter_px": round(plan.jitter_px, 3),
                "noise_sigma": round(plan.noise_sigma, 3),
                "light_gain": round(plan.light_gain, 4),
                "light_tilt": round(plan.light_tilt, 4),
            }
            rows.append(
                ClipTruth(
                    subject=subject,
                    filename=name,
                    identity=face.identity,
                    variant=face.variant,
                    aus=au_text,
                    emotion=emotion,
                    label3=label3,
                    objective_class=objective,
                    amplitude_px=round(plan.amplitude_px, 4),
                    onset=onset,
                    apex=onset + plan.apex_index,
                    offset=onset + plan.n_frames - 1,
                    landmarks_onset=np.round(face.landmarks, 3).tolist(),
                    apex_displacement=motion["apex_displacement"],
                    apex_global_shift=motion["apex_global_shift"],
                    distractors=distractors,
                )
            )
            if progress is not None:
                progress(len(rows), total)
    annotations = write_casme2_sheet(rows, out / ANNOTATION_FILE)
    truth_path = out / TRUTH_FILE
    settings = {"subjects": subjects, "clips_per_subject": clips_per_subject, "size": size, "seed": seed}
    _write_json_atomically({"settings": settings, "clips": [asdict(row) for row in rows]}, truth_path)
    return DemoCorpus(
        root=out,
        annotations=annotations,
        truth=truth_path,
        clips=len(rows),
        seconds=round(time.perf_counter() - started, 2),
    )


def read_demo_truth(corpus_root: Path) -> list[ClipTruth]:
    """The generated ground truth of a corpus, one `ClipTruth` per clip (what tests measure against)."""
    path = Path(corpus_root) / TRUTH_FILE
    if not path.is_file():
        raise UserError(f"{path}: demo truth not found; generate the corpus with `augmenter demo-data`")
    return [ClipTruth(**clip) for clip in json.loads(path.read_text(encoding="utf-8"))["clips"]]
