"""The demo's motion model: FACS micro-movements as dense displacement fields, rendered onto a face photo.

Why one module: the corpus (augmenter/demo/corpus.py) renders every clip with it, and the `demo-oracle`
generator (augmenter/demo/oracle.py) renders a source clip's recorded motion onto another face with the very
same code, so the oracle is the true motion, not an estimate of it.

Landmark motion. For each AU, dlib's 68 landmarks (plus two virtual cheek points) get FACS displacement
directions (`AU_MOVES`). A dense field spreads them over the skin with normalised Gaussian weights, ``D(x) =
Σ w_i(x) d_i / (Σ w_i(x) + c)`` with ``w_i = exp(-|x - p_i|² / 2σ²)``: unmoved landmarks pin the skin (d_i =
0) and the constant c makes motion fade to zero away from every landmark. The field is scaled so the largest
displacement at a moved landmark equals the clip's amplitude (0.5–2 px at 128² in the default corpus).

Skin effects between landmarks (`skin_effects`). FACS (Ekman, Friesen & Hager 2002) defines several AUs
largely by appearance changes that no landmark carries: AU4 gathers the skin between the brows into vertical
glabellar furrows (and a short horizontal line at the root of the nose, procerus); AU6 bulges the
infraorbital triangle, deepens the furrow under the lower lid and draws crow's-feet lines at the outer eye
corner; AU9 wrinkles the skin across the root of the nose; AU10 and AU12 deepen the nasolabial fold (AU12
also bunches the cheek lateral to it); AU14 pits a dimple lateral to the lip corner; AU1 and AU2 raise
horizontal forehead furrows (medially and laterally). Each is a small displacement field centred between
landmarks — a *furrow* (skin on both sides drawn toward a segment), a *bulge* (skin pushed radially out of a
centre) or a *dimple* (drawn into a centre) — whose peak is a fixed fraction of the clip amplitude (≤ 0.5 ×
amplitude, so within the corpus's range), plus the shading it causes: a furrow darkens along its line, a
bulge lit from above is brighter on top and darker below, a dimple darkens at its pit. Depths scale with
amplitude / inter-ocular distance (≤ ~15 % darker). Geometry is in units of the inter-ocular distance, so it
follows each face.

Grid convention (one for the whole project, see augmenter/flow.py): D(p) is the forward displacement of the
skin at p, i.e. content at p appears at p + D(p). Frames are rendered by backward sampling with cv2.remap,
``frame(x) = face(m(x))`` where m inverts p ↦ p + D(p) (a few fixed-point steps, `inverse_map`; plain x −
D(x) would be off by |D|·|∇D|, up to ~0.5 px here). So the optical flow from the onset frame to the apex
frame, read at a point p, estimates D(p); `apex_motion` recomputes the dense apex field of any recorded
clip.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from augmenter.face.landmarks68 import LEFT_EYE, RIGHT_EYE

REFERENCE_SIZE = 128  # amplitudes and distractor strengths are given at 128² and scale with the frame size
INVERSE_ITERATIONS = 8  # fixed-point steps inverting D (worst residual measured: 0.06 px at 4 px, 128²)
WARM_ITERATIONS = 3  # the same, started from the previous frame's inverse
SIGMA_FRACTION = 0.2  # spatial reach of a moved landmark, as a fraction of the inter-ocular distance
CHEEK_LEFT, CHEEK_RIGHT = 68, 69  # virtual control points appended after the 68 landmarks
# Shading depth is `shade` × amplitude / (SHADE_REFERENCE × inter-ocular distance): 4 px at 128² ≈ full depth.
SHADE_REFERENCE = 0.1

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
    # AU9 lifts the nose wings and the upper lip a little and lowers the medial brows.
    9: {
        **{i: (0.2, -1.0) for i in (31, 35)},
        **{i: (0.0, -0.8) for i in (32, 33, 34)},
        **{i: (0.0, -0.3) for i in (21, 22, 50, 52)},
    },
    # AU10 raises the upper lip, its centre most.
    10: {**{i: (0.0, -1.0) for i in (50, 51, 52)}, **{i: (0.1, -0.6) for i in (49, 53)}},
    12: {48: (0.8, -0.6), 54: (0.8, -0.6), **{i: (0.3, -0.25) for i in (49, 53, 55, 59)}},
    14: {48: (-1.0, -0.1), 54: (-1.0, -0.1), **{i: (-0.3, 0.0) for i in (49, 53, 55, 59)}},
    15: {48: (0.1, 1.0), 54: (0.1, 1.0), 55: (0.0, 0.5), 59: (0.0, 0.5)},
    17: {56: (0.0, -0.8), 57: (0.0, -0.8), 58: (0.0, -0.8), 7: (0.0, -0.9), 8: (0.0, -1.0), 9: (0.0, -0.9)},
    25: {56: (0.0, 1.0), 57: (0.0, 1.0), 58: (0.0, 1.0), 55: (0.0, 0.5), 59: (0.0, 0.5), 51: (0.0, -0.3)},
}
# Inner-lip points follow the outer lip so that a moving lip is not pinned by its own inner contour.
INNER_LIP_FOLLOWS: dict[int, int] = {60: 48, 61: 50, 62: 51, 63: 52, 64: 54, 65: 56, 66: 57, 67: 58}


# --- landmark motion ---


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


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres in pixels: the unit of every face-relative length here."""
    points = np.asarray(landmarks, np.float32)
    return float(np.linalg.norm(points[list(LEFT_EYE)].mean(0) - points[list(RIGHT_EYE)].mean(0)))


def smoothing_sigma(landmarks: np.ndarray) -> float:
    """Spatial reach of a moved point (SIGMA_FRACTION of the inter-ocular distance, ≈ 8 px at 128²)."""
    return max(SIGMA_FRACTION * inter_ocular(landmarks), 1.0)


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


# --- skin effects between landmarks ---


@dataclass(frozen=True)
class SkinEffect:
    """One FACS appearance change (module docstring): a furrow along `points[0]`→`points[1]`, or a bulge /
    dimple at `points[0]`, of spatial scale `width` px; `gain` = peak displacement / clip amplitude; `shade` =
    darkening depth at full strength (negative = brighter)."""

    au: int
    name: str
    kind: str  # "furrow" | "bulge" | "dimple"
    points: tuple[tuple[float, float], ...]
    width: float
    gain: float
    shade: float


def skin_effects(landmarks: np.ndarray, aus: tuple[int, ...]) -> list[SkinEffect]:
    """The appearance changes of `aus` on this face (geometry in inter-ocular units u, module docstring)."""
    points = control_points(landmarks)
    u = inter_ocular(landmarks)
    mid_x = float(np.mean(points[27:31, 0]))
    effects: list[SkinEffect] = []

    def add(au: int, name: str, kind: str, pts: list, width: float, gain: float, shade: float) -> None:
        rounded = tuple((round(float(x), 3), round(float(y), 3)) for x, y in pts)
        effects.append(SkinEffect(au, name, kind, rounded, round(width * u, 3), gain, shade))

    for au in aus:
        if au == 1:
            y = float(points[[20, 21, 22, 23], 1].min()) - 0.3 * u
            add(
                1,
                "forehead-medial",
                "furrow",
                [(points[21, 0] - 0.1 * u, y), (points[22, 0] + 0.1 * u, y)],
                0.06,
                0.3,
                0.08,
            )
        elif au == 2:
            for name, outer, inner in (("left", 17, 19), ("right", 26, 24)):
                y = float(min(points[outer, 1], points[inner, 1])) - 0.25 * u
                add(
                    2,
                    f"forehead-lateral-{name}",
                    "furrow",
                    [(points[outer, 0], y), (points[inner, 0], y)],
                    0.06,
                    0.3,
                    0.08,
                )
        elif au == 4:
            top = float(min(points[21, 1], points[22, 1])) - 0.12 * u
            bottom = float(points[27, 1]) + 0.05 * u
            for name, dx in (("left", -0.07), ("right", 0.07)):
                x = mid_x + dx * u
                add(4, f"glabella-{name}", "furrow", [(x, top), (x, bottom)], 0.06, 0.5, 0.15)
            y = float(points[27, 1]) + 0.12 * u
            add(4, "procerus", "furrow", [(mid_x - 0.1 * u, y), (mid_x + 0.1 * u, y)], 0.06, 0.25, 0.08)
        elif au == 6:
            for name, cheek, lower, corner, out in (
                ("left", CHEEK_LEFT, (41, 40), 36, -1.0),
                ("right", CHEEK_RIGHT, (46, 47), 45, 1.0),
            ):
                add(
                    6,
                    f"cheek-{name}",
                    "bulge",
                    [(points[cheek, 0], points[cheek, 1] - 0.05 * u)],
                    0.2,
                    0.4,
                    0.06,
                )
                a, b = points[lower[0]], points[lower[1]]
                add(
                    6,
                    f"infraorbital-{name}",
                    "furrow",
                    [(a[0] + out * 0.05 * u, a[1] + 0.2 * u), (b[0] - out * 0.05 * u, b[1] + 0.2 * u)],
                    0.06,
                    0.3,
                    0.1,
                )
                cx, cy = points[corner] + np.array([out * 0.1 * u, 0.0])
                for tilt in (-0.35, 0.35):
                    end = (cx + out * 0.15 * u, cy + tilt * 0.15 * u)
                    add(6, f"crows-feet-{name}", "furrow", [(cx, cy), end], 0.05, 0.25, 0.12)
        elif au == 9:
            top, bottom = float(points[27, 1]), float(points[30, 1])
            for share in (0.3, 0.55):
                y = top + share * (bottom - top)
                add(9, "nose-root", "furrow", [(mid_x - 0.1 * u, y), (mid_x + 0.1 * u, y)], 0.06, 0.4, 0.14)
        elif au in (10, 12):
            strength = (0.45, 0.16) if au == 12 else (0.35, 0.14)
            for name, wing, corner, out in (("left", 31, 48, -1.0), ("right", 35, 54, 1.0)):
                start = (points[wing, 0] + out * 0.1 * u, points[wing, 1] - 0.05 * u)
                end = (points[corner, 0] + out * 0.12 * u, points[corner, 1] + 0.1 * u)
                add(au, f"nasolabial-{name}", "furrow", [start, end], 0.07, *strength)
                if au == 12:
                    centre = ((start[0] + end[0]) / 2 + out * 0.15 * u, (start[1] + end[1]) / 2)
                    add(12, f"cheek-bunch-{name}", "bulge", [centre], 0.15, 0.3, 0.05)
        elif au == 14:
            for name, corner, out in (("left", 48, -1.0), ("right", 54, 1.0)):
                centre = (points[corner, 0] + out * 0.12 * u, points[corner, 1] - 0.02 * u)
                add(14, f"dimple-{name}", "dimple", [centre], 0.08, 0.45, 0.2)
    return effects


def skin_motion(
    effects: list[SkinEffect], shape: tuple[int, int], amplitude: float, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apex (H, W, 2) displacement and (H, W) darkening of `effects` for a clip of `amplitude` px on a face
    whose inter-ocular distance is `unit` px."""
    height, width = shape
    grid = _pixel_grid(height, width)
    field = np.zeros((height, width, 2), np.float32)
    shade = np.zeros((height, width), np.float32)
    depth = amplitude / max(SHADE_REFERENCE * unit, 1e-6)
    for effect in effects:
        w = max(effect.width, 0.5)
        if effect.kind == "furrow":
            a, b = (np.asarray(p, np.float32) for p in effect.points)
            seg = b - a
            t = np.clip(((grid - a) @ seg) / max(float(seg @ seg), 1e-6), 0.0, 1.0)
            offset = grid - (a + t[..., None] * seg)  # from the nearest point of the segment
            sign = -1.0  # skin is drawn toward the line
            line = np.exp(-(offset**2).sum(-1) / (2.0 * (0.5 * w) ** 2))
        else:
            offset = grid - np.asarray(effect.points[0], np.float32)
            sign = 1.0 if effect.kind == "bulge" else -1.0
            r2 = (offset**2).sum(-1)
            if effect.kind == "bulge":  # lit from above: the top of the bulge brighter, below it darker
                line = (offset[..., 1] / w) * np.exp(-r2 / (2.0 * w * w))
            else:
                line = np.exp(-r2 / (2.0 * (0.7 * w) ** 2))
        distance = np.sqrt((offset**2).sum(-1))
        # Peak |D| = gain × amplitude at distance w from the line / centre, zero on it, fading beyond ~3w.
        magnitude = (distance / w) * np.exp(0.5 - distance**2 / (2.0 * w * w))
        direction = offset / np.maximum(distance, 1e-6)[..., None]
        field += (sign * effect.gain * amplitude) * magnitude[..., None] * direction
        shade += effect.shade * depth * line
    return field.astype(np.float32), np.clip(shade, -0.25, 0.25).astype(np.float32)


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
class ApexMotion:
    """What a set of AUs does at its apex: the (H, W, 2) displacement (landmark motion + skin effects), the
    (H, W) darkening, and the skin effects themselves."""

    field: np.ndarray
    shade: np.ndarray
    effects: list[SkinEffect]


def apex_motion(landmarks: np.ndarray, aus: tuple[int, ...], amplitude: float, size: int) -> ApexMotion:
    """The full apex motion of `aus` at `amplitude` px on a face of `size`² (module docstring)."""
    effects = skin_effects(landmarks, aus)
    skin, shade = skin_motion(effects, (size, size), amplitude, inter_ocular(landmarks))
    return ApexMotion(au_field(landmarks, aus, amplitude, size) + skin, shade, effects)


@dataclass(frozen=True)
class ClipPlan:
    """The random choices of one clip, drawn up front so rendering is a pure function of them (plus the
    head-jitter path and the sensor noise)."""

    aus: tuple[int, ...]
    amplitude_px: float
    n_frames: int
    apex_index: int
    blink_start: int | None
    blink_frames: int
    weak_au: int | None
    weak_gain: float
    weak_apex_index: int
    jitter_px: float
    noise_sigma: float
    light_gain: float
    light_tilt: float

    def as_dict(self) -> dict:
        """JSON-ready fields (the truth file keeps the plan so the oracle can re-render the clip)."""
        document = asdict(self)
        document["aus"] = list(self.aus)
        return document

    @classmethod
    def from_dict(cls, document: dict) -> ClipPlan:
        return cls(**{**document, "aus": tuple(int(a) for a in document["aus"])})


def render_clip(
    face_image: np.ndarray,
    landmarks: np.ndarray,
    plan: ClipPlan,
    rng: np.random.Generator,
    jitter: np.ndarray | None = None,
    photometric: bool = True,
) -> tuple[np.ndarray, dict]:
    """uint8 (T, S, S, 3) frames of one clip and the ground truth of its motion.

    Motion per frame t: D_t = profile(t)·D_AU + blink(t)·D_blink + weak(t)·D_weakAU + jitter(t), each AU field
    with its skin effects (and their darkening); then, when `photometric`, lighting drift (global gain and a
    left-right tilt) and Gaussian sensor noise. `jitter` (T, 2) replays a recorded head-jitter path; otherwise
    `rng` draws it. `rng` draws only the jitter and the noise.
    """
    size = face_image.shape[0]
    n = plan.n_frames
    main = apex_motion(landmarks, plan.aus, plan.amplitude_px, size)
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
        # An unrelated AU peaking near the apex (co-occurring motion, as in real clips) confuses the classes.
        weak = apex_motion(landmarks, (plan.weak_au,), plan.amplitude_px * plan.weak_gain, size)
        weak_profile = temporal_profile(n, plan.weak_apex_index, residual=0.0)
    if jitter is None:
        jitter = _smooth_noise(rng, n, plan.jitter_px)
        jitter -= jitter[0]  # the onset frame is the undisturbed photo; jitter is relative to it
    jitter = np.asarray(jitter, np.float32)
    xs = (np.arange(size, dtype=np.float32) / max(size - 1, 1) - 0.5)[None, :, None]
    face = face_image.astype(np.float32)
    frames = np.empty((n, size, size, 3), np.uint8)
    positions: np.ndarray | None = None  # warm start of the inverse map: consecutive frames differ little
    for t in range(n):
        displacement = profile[t] * main.field + jitter[t]
        darkening = profile[t] * main.shade
        if blink is not None and blink_profile[t] > 0:
            displacement = displacement + blink_profile[t] * blink
        if weak is not None:
            displacement = displacement + weak_profile[t] * weak.field
            darkening = darkening + weak_profile[t] * weak.shade
        positions = inverse_map(
            displacement, positions, WARM_ITERATIONS if positions is not None else INVERSE_ITERATIONS
        )
        moved = warp(face, positions) * (1.0 - darkening)[..., None]
        if photometric:
            tau = t / max(n - 1, 1)
            moved *= 1.0 + plan.light_gain * tau + plan.light_tilt * tau * 2.0 * xs
            moved += rng.normal(0.0, plan.noise_sigma, size=moved.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    truth = {
        "apex_displacement": field_at(main.field, landmarks).round(4).tolist(),
        "apex_global_shift": jitter[plan.apex_index].round(4).tolist(),
        "global_shift": jitter.round(4).tolist(),
        "skin_effects": [
            {**asdict(effect), "peak_px": round(effect.gain * plan.amplitude_px, 4)}
            for effect in main.effects
        ],
    }
    return frames, truth
