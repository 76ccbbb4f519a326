"""A quick look at a store: source | target | generated, one row per clip, as an animated GIF (or a PNG).

The store keeps no source pixels (only provenance), so the source frames and target faces are prepared again
from the manifests and roots recorded in the store's attributes (or given explicitly), through the same
cached preparation the generator used, so the three columns line up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.errors import UserError
from augmenter.manifest import read_manifest
from augmenter.store import open_store

GAP = 2  # pixels between panels


def _source_frames(
    row: pd.Series, sources: pd.DataFrame, root: Path, size: int, backend: str, cache: Path | None
):  # noqa: ANN202, E501
    from augmenter.prepare import prepare_clip

    dataset, subject = str(row["source_subject"]).split("/", 1)
    match = sources[
        (sources["dataset"] == dataset)
        & (sources["subject"] == subject)
        & (sources["clip_id"] == row["source_clip"])
    ]
    if match.empty:
        return None
    return prepare_clip(match.iloc[0], root, size, backend, cache_dir=cache).frames


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


def preview(
    store: str | Path,
    out: str | Path,
    n: int = 4,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Write a grid of `n` done clips (source | target | generated) to `out` (.gif animates, .png = apex)."""
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
    panels = []
    for _, row in rows.iterrows():
        generated = opened.read_clip(int(row["index"]))
        try:
            source = (
                _source_frames(row, sources, source_root, size, backend, cache)
                if sources is not None
                else None
            )
        except UserError:
            source = None
        try:
            target = _target_image(row, attrs, size, backend, cache)
        except UserError:
            target = None
        panels.append(
            (
                source if source is not None else _placeholder(size)[None],
                target if target is not None else _placeholder(size),
                generated,
                int(row["apex_index"]),
            )
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, 128 // size)
    if out.suffix.lower() == ".png":
        frame = _grid(panels, lambda clip, apex: min(apex, len(clip) - 1), size)
        iio.imwrite(out, _upscale(frame, scale))
        return out
    length = max(len(p[2]) for p in panels)
    frames = [
        _upscale(_grid(panels, lambda clip, _apex, t=t: min(t, len(clip) - 1), size), scale)
        for t in range(length)
    ]  # noqa: E501
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    iio.imwrite(tmp, np.stack(frames), duration=80, loop=0)
    tmp.replace(out)
    return out


def _grid(panels: list, pick, size: int) -> np.ndarray:  # noqa: ANN001 - pick(clip, apex) -> frame index
    canvas = np.full((len(panels) * (size + GAP) - GAP, 3 * size + 2 * GAP, 3), 255, np.uint8)
    for r, (source, target, generated, apex) in enumerate(panels):
        top = r * (size + GAP)
        tiles = (source[pick(source, apex)], target, generated[pick(generated, apex)])
        for c, tile in enumerate(tiles):
            left = c * (size + GAP)
            canvas[top : top + size, left : left + size] = tile
    return canvas


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image if scale == 1 else np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
