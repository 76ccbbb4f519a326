"""A quick look at a store: source | target | generated per clip, with the motion made visible, as an animated
GIF (or a PNG of the apex frames).

Micro-expressions move a pixel or less, which no eye sees in a thumbnail; so under each clip's frames a
second row shows the dense flow from the onset to the current frame of the source and of the generated clip
as colour (hue = direction, brightness = magnitude, one fixed magnitude scale for the whole preview, printed
in the header) with a direction key under the target. A motionless clip (copy-onset) is black there. Frames
are shown at the store's native size or an integer multiple of it (nearest neighbour, said in the header);
labels are drawn as text.

The store keeps no source pixels (only provenance), so the source frames and target faces are prepared again
from the manifests and roots recorded in the store's attributes (or given explicitly), through the same
cached preparation the generator used, so the three columns line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.flow import to_grey
from augmenter.manifest import read_manifest
from augmenter.store import open_store

GAP = 2  # pixels between panels (at the output resolution)
COLUMNS = ("source", "target", "generated")
# TV-L1 (the project's flow) with one warp instead of five: 24 ms instead of 150 at 64², 0.02 px mean
# difference on a landmark-tps clip, and exactly zero between equal frames (Farneback: up to 1.9 px there).
FLOW_WARPS = 1
MIN_FLOW_SCALE = 0.2  # px: the brightest flow colour never stands for less (a still clip stays black)
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK, PAPER = (20, 20, 20), (255, 255, 255)


def _source_clip(
    row: pd.Series, sources: pd.DataFrame, root: Path, size: int, backend: str, cache: Path | None
):  # noqa: ANN202 - PreparedClip, imported lazily
    from augmenter.prepare import prepare_clip

    dataset, subject = str(row["source_subject"]).split("/", 1)
    match = sources[
        (sources["dataset"] == dataset)
        & (sources["subject"] == subject)
        & (sources["clip_id"] == row["source_clip"])
    ]
    if match.empty:
        return None
    return prepare_clip(match.iloc[0], root, size, backend, cache_dir=cache)


def _target_image(
    row: pd.Series, attrs: dict, size: int, backend: str, cache: Path | None
) -> np.ndarray | None:
    from augmenter.prepare import IMAGE_SUFFIXES, prepare_target, prepare_targets_from_manifest

    targets = Path(attrs.get("targets", ""))
    target_id = str(row["target_id"])
    if targets.is_dir():
        stem = target_id.split("/", 1)[-1]
        paths = [p for p in sorted(targets.glob(f"{stem}.*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not paths:
            return None
        return prepare_target(
            paths[0], size, backend, key=target_id, subject=str(row["target_subject"])
        ).image
    if not targets.is_file():
        return None
    manifest = read_manifest(targets)
    keys = manifest["dataset"] + "/" + manifest["subject"] + "/" + manifest["clip_id"]
    match = manifest[keys == target_id]
    if match.empty:
        return None
    root = Path(attrs.get("targets_root") or attrs.get("root", "."))
    return prepare_targets_from_manifest(match, root, size, backend, cache_dir=cache)[0].image


def _placeholder(size: int) -> np.ndarray:
    """Grey with a dark cross: "source not available here" (the store never holds source pixels)."""
    tile = np.full((size, size, 3), 128, np.uint8)
    diagonal = np.arange(size)
    tile[diagonal, diagonal] = tile[diagonal, size - 1 - diagonal] = 40
    return tile


def onset_flows(frames: np.ndarray, only: int | None = None) -> np.ndarray:
    """float32 (T, S, S, 2) (dx, dy) px, augmenter.flow's convention: the flow from the onset (frame 0) to
    every frame (or to frame `only` alone, the rest left zero); frame 0's is zero."""
    from skimage.registration import optical_flow_tvl1

    flows = np.zeros(frames.shape[:3] + (2,), np.float32)
    onset = to_grey(frames[0])
    if only is None:
        wanted: list[int] = list(range(1, len(frames)))
    else:
        wanted = [min(only, len(frames) - 1)] if only > 0 else []
    for t in wanted:
        v_row, u_col = optical_flow_tvl1(onset, to_grey(frames[t]), num_warp=FLOW_WARPS, dtype=np.float32)
        flows[t] = np.stack([u_col, v_row], axis=-1)
    return flows


def flow_colour(flow: np.ndarray, full_scale: float) -> np.ndarray:
    """uint8 RGB of an (H, W, 2) flow: hue = direction, value = |flow| / full_scale (clipped), sat. 1."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.empty(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (angle / 2.0).astype(np.uint8) % 180  # OpenCV hue runs 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / full_scale * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def direction_key(size: int, full_scale: float) -> np.ndarray:
    """The colour of every flow up to `full_scale` px: a disc (centre = no motion, rim = full scale)."""
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = max(centre, 1.0)
    flow = np.stack([(x - centre) / radius, (y - centre) / radius], axis=-1) * full_scale
    tile = flow_colour(flow, full_scale)
    tile[np.hypot(x - centre, y - centre) > radius] = 64
    return tile


def flow_scale(flows: list[np.ndarray]) -> float:
    """One magnitude scale for the whole preview: the 99th percentile of the flow pixels of every frame that
    moved at all (the onset's zero flow, frames not computed and motionless clips do not count), rounded up to
    two significant digits, at least MIN_FLOW_SCALE (noise in a still clip must not light up)."""
    moved = [frame for clip in flows for frame in clip if frame.any()]
    values = np.concatenate([np.linalg.norm(f, axis=-1).ravel() for f in moved]) if moved else np.zeros(1)
    top = float(np.percentile(values, 99))
    if top <= MIN_FLOW_SCALE:
        return MIN_FLOW_SCALE
    digits = 1 - math.floor(math.log10(top))
    return math.ceil(top * 10**digits) / 10**digits


@dataclass
class _Clip:
    """One previewed clip: its frames (None where not available here), apexes and onset flows."""

    caption: str
    source: np.ndarray | None
    source_apex: int
    target: np.ndarray | None
    generated: np.ndarray
    apex: int
    source_flows: np.ndarray | None
    generated_flows: np.ndarray


def preview(
    store: str | Path,
    out: str | Path,
    n: int = 4,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    scale: int | None = None,
    full_scale: float | None = None,
) -> Path:
    """Write `n` done clips (source | target | generated, each over its onset→frame flow) to `out`
    (.gif animates, .png = apex frames). `scale`: integer upscaling of the frames (default: up to ≥ 128 px);
    `full_scale`: the flow magnitude (px) drawn at full brightness (default: from the clips, see flow_scale).
    """
    import imageio.v3 as iio

    opened = open_store(store)
    attrs, table = opened.attrs, opened.table
    if table.empty:
        raise UserError(f"{store}: no finished clips to preview; run `augmenter generate` first")
    size = int(attrs["size"])
    backend = str(attrs.get("face_backend", "dlib"))
    manifest_path = Path(manifest or attrs.get("manifest", ""))
    source_root = Path(root or attrs.get("root", "."))
    sources = read_manifest(manifest_path) if manifest_path.is_file() else None
    cache = Path(str(Path(store)) + ".cache")
    cache = cache if cache.is_dir() else None
    rows = table.sample(n=min(n, len(table)), random_state=seed).sort_values("index")
    still = Path(out).suffix.lower() == ".png"  # the apex frames only: their flows alone are needed
    clips = []
    for _, row in rows.iterrows():
        generated = opened.read_clip(int(row["index"]))
        try:
            source = (
                _source_clip(row, sources, source_root, size, backend, cache) if sources is not None else None
            )
        except UserError:
            source = None
        try:
            target = _target_image(row, attrs, size, backend, cache)
        except UserError:
            target = None
        clips.append(
            _Clip(
                caption=f"#{int(row['index'])} {row.get('label3', '')} {row['source_subject']}/"
                f"{row['source_clip']} -> {row['target_subject']}",
                source=None if source is None else source.frames,
                source_apex=0 if source is None else int(source.apex_index),
                target=target,
                generated=generated,
                apex=int(row["apex_index"]),
                source_flows=None
                if source is None
                else onset_flows(source.frames, int(source.apex_index) if still else None),
                generated_flows=onset_flows(generated, int(row["apex_index"]) if still else None),
            )
        )
    scale = int(scale) if scale is not None else max(1, 128 // size)
    if scale < 1:
        raise UserError(f"preview scale {scale}: give a whole number of at least 1")
    flows = [f for c in clips for f in (c.source_flows, c.generated_flows) if f is not None]
    full = float(full_scale) if full_scale is not None else flow_scale(flows)
    header = _header(size, scale, full)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if still:
        frame = _frame(clips, header, size, scale, full, apex=True)
        tmp = out.with_name(out.name + ".tmp" + out.suffix)
        iio.imwrite(tmp, frame)
        tmp.replace(out)
        return out
    from PIL import Image

    length = max(max(len(c.generated), 0 if c.source is None else len(c.source)) for c in clips)
    # Fast-octree palettes: 0.03 s a frame against Pillow's default median cut (~2 s at this size), about one
    # grey level off on average.
    frames = [
        Image.fromarray(_frame(clips, header, size, scale, full, t=t)).quantize(
            256, Image.Quantize.FASTOCTREE
        )
        for t in range(length)
    ]
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    tmp.replace(out)
    return out


def _width(size: int, scale: int) -> int:
    return len(COLUMNS) * size * scale + (len(COLUMNS) - 1) * GAP


def _text_lines(text: str, width: int, font_scale: float) -> list[str]:
    """Words wrapped so that each line fits `width` pixels in FONT at `font_scale`."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, FONT, font_scale, 1)[0][0] <= width - 4:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _strip(lines: list[str], width: int, font_scale: float, centres: list[int] | None = None) -> np.ndarray:
    """White strip with one text line per entry (centred on `centres` when given: one label per column)."""
    (_, height), baseline = cv2.getTextSize("Ag", FONT, font_scale, 1)
    line = height + baseline + 3
    if centres is not None:
        strip = np.full((line + 2, width, 3), PAPER, np.uint8)
        for text, centre in zip(lines, centres, strict=True):
            w = cv2.getTextSize(text, FONT, font_scale, 1)[0][0]
            cv2.putText(strip, text, (centre - w // 2, height + 2), FONT, font_scale, INK, 1, cv2.LINE_AA)
        return strip
    strip = np.full((line * len(lines) + 2, width, 3), PAPER, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(strip, text, (2, k * line + height + 2), FONT, font_scale, INK, 1, cv2.LINE_AA)
    return strip


def _header(size: int, scale: int, full: float) -> np.ndarray:
    """Column labels, then what the frames' scale and the flow colours mean."""
    width, column = _width(size, scale), size * scale
    centres = [c * (column + GAP) + column // 2 for c in range(len(COLUMNS))]
    labels = _strip(list(COLUMNS), width, 0.5, centres)
    frames = f"frames {size}px x{scale} (nearest neighbour)" if scale > 1 else f"frames at native {size}px"
    note = (
        f"{frames}. Lower row: flow onset->frame, hue = direction, brightness = |flow|, full at "
        f"{full:.2g} px (same scale everywhere); centre: direction key."
    )
    return np.vstack([labels, _strip(_text_lines(note, width, 0.35), width, 0.35)])


def _frame(
    clips: list[_Clip], header: np.ndarray, size: int, scale: int, full: float, t: int = 0, apex: bool = False
) -> np.ndarray:
    """One output image: the header, then per clip its caption, its frames row and its flow row."""
    width = _width(size, scale)
    key = direction_key(size * scale, full)
    blocks = [header]
    for clip in clips:
        blocks.append(_strip(_text_lines(clip.caption, width, 0.35)[:1], width, 0.35))
        g = min(clip.apex if apex else t, len(clip.generated) - 1)
        if clip.source is None:
            source_tile = flow_tile = _placeholder(size)
        else:
            s = min(clip.source_apex if apex else t, len(clip.source) - 1)
            source_tile, flow_tile = clip.source[s], flow_colour(clip.source_flows[s], full)
        target = clip.target if clip.target is not None else _placeholder(size)
        top = [_upscale(tile, scale) for tile in (source_tile, target, clip.generated[g])]
        bottom = [
            _upscale(flow_tile, scale),
            key,
            _upscale(flow_colour(clip.generated_flows[g], full), scale),
        ]
        for tiles in (top, bottom):
            blocks.append(_row(tiles))
            blocks.append(np.full((GAP, width, 3), PAPER, np.uint8))
    return np.vstack(blocks)


def _row(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], GAP, 3), PAPER, np.uint8)
    parts: list[np.ndarray] = []
    for tile in tiles:
        parts.extend([tile, gap])
    return np.hstack(parts[:-1])


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image if scale == 1 else np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
