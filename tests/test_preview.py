"""The preview on real stores made by the real generator on a real 1-worker LocalCluster (demo corpus, 64²):
native-size tiles, a labelled header, and a flow row that lights up where the clip moves and stays black for
copy-onset (the motionless floor)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from augmenter.cluster import close_client, get_client
from augmenter.generate import GenerateJob, generate
from augmenter.manifest import read_manifest, write_manifest
from augmenter.preview import GAP, direction_key, flow_colour, flow_scale, preview
from augmenter.store import read_clip, store_table

SIZE = 64
PANEL = SIZE + GAP  # one tile and the gap below (or beside) it


@pytest.fixture(scope="module")
def stores(demo_manifest: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"landmark-tps": store, "copy-onset": store}: the same 3 pairings rendered by each generator."""
    manifest_path, root = demo_manifest
    manifest = read_manifest(manifest_path)
    folder = tmp_path_factory.mktemp("preview-stores")
    small = write_manifest(manifest.groupby("subject").head(1), folder / "small.csv")
    client = get_client(workers=1, gpus="none", dashboard_address=None)
    try:
        out = {}
        for kind in ("landmark-tps", "copy-onset"):
            job = GenerateJob(
                manifest=small, root=root, generator=kind, targets=small, out=folder / f"{kind}.zarr",
                max_per_source=1, limit=3, size=SIZE, batch_size=3, progress=False, identity_quality=False,
                dashboard_address=None,
            )  # fmt: skip
            result = generate(job, client=client)
            assert result.written >= 2, result.failures
            out[kind] = job.out
        return out
    finally:
        close_client(client)


def _first_tile_row(image: np.ndarray) -> int:
    """Header and captions are text on white; the first row with hardly any white is the first tile's."""
    white = (image == 255).all(axis=-1).mean(axis=1)
    return int(np.argmax(white < 0.1))


def test_preview_png_is_native_size_with_labelled_columns(stores: dict[str, Path], tmp_path: Path) -> None:
    store = stores["landmark-tps"]
    png = iio.imread(preview(store, tmp_path / "native.png", n=2, scale=1))
    assert png.shape[1] == 3 * SIZE + 2 * GAP  # no upscaling at scale 1
    top = _first_tile_row(png)
    # Each column label is ink (dark pixels) over its column in the header strip, above the first caption.
    for c in range(3):
        column = png[:20, c * PANEL : c * PANEL + SIZE]
        assert (column.min(axis=-1) < 100).sum() > 20, f"column {c} has no label"
    assert (png[20:top].min(axis=-1) < 100).sum() > 100  # the scale note and the first caption
    # The generated tiles are the store's apex frames, byte for byte: the first clip's at the top, the
    # second's in the last frames row (above its flow row), so the image holds exactly two clips.
    picked = store_table(store).sample(n=2, random_state=0).sort_values("index")
    apex = [read_clip(store, int(r["index"]))[int(r["apex_index"])] for _, r in picked.iterrows()]
    first = png[top : top + SIZE, 2 * PANEL : 2 * PANEL + SIZE]
    np.testing.assert_array_equal(first, apex[0])
    np.testing.assert_array_equal(png[-2 * PANEL : -PANEL - GAP, 2 * PANEL : 2 * PANEL + SIZE], apex[1])

    # At an integer scale every tile is the same frame with each pixel repeated (and the header says so).
    big = iio.imread(preview(store, tmp_path / "x2.png", n=2, scale=2))
    assert big.shape[1] == 2 * 3 * SIZE + 2 * GAP
    top2, side = _first_tile_row(big), 2 * SIZE
    tile2 = big[top2 : top2 + side, 2 * (side + GAP) : 3 * side + 2 * GAP]
    np.testing.assert_array_equal(tile2, np.repeat(np.repeat(apex[0], 2, axis=0), 2, axis=1))


def _flow_tiles(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source flow, key, generated flow) of the last clip: the last row of tiles above the final gap."""
    bottom = frame[-PANEL:-GAP]
    return tuple(bottom[:, c * PANEL : c * PANEL + SIZE] for c in range(3))  # type: ignore[return-value]


def test_flow_row_shows_motion_and_stays_black_for_copy_onset(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    moving = iio.imread(preview(stores["landmark-tps"], tmp_path / "tps.gif", n=1, scale=1, full_scale=0.5))
    still = iio.imread(preview(stores["copy-onset"], tmp_path / "copy.gif", n=1, scale=1, full_scale=0.5))
    assert moving.ndim == 4 and len(moving) > 1 and moving.shape[2] == 3 * SIZE + 2 * GAP
    # Onset frame: nothing has moved yet in either clip.
    for gif in (moving, still):
        source, key, generated = _flow_tiles(gif[0])
        assert source.max() < 40 and generated.max() < 40
    # Later frames: landmark-tps moves the target face with the source's motion; copy-onset never moves.
    tps_generated = np.stack([_flow_tiles(f)[2] for f in moving[1:]]).astype(int)
    copy_generated = np.stack([_flow_tiles(f)[2] for f in still[1:]]).astype(int)
    copy_source = np.stack([_flow_tiles(f)[0] for f in still[1:]]).astype(int)
    assert (tps_generated.max(axis=-1) > 60).mean() > 0.01, "landmark-tps flow row is dark"
    assert (copy_generated.max(axis=-1) > 40).mean() < 0.002, "copy-onset flow row lights up"
    assert (copy_source.max(axis=-1) > 60).mean() > 0.01, "the source of a copy-onset clip still moves"
    # The key under the target is the same colour wheel in both (one fixed scale; compared in PNGs, as a
    # GIF's palette differs per image), dark at its centre, bright at its rim.
    keys = [
        _flow_tiles(iio.imread(preview(stores[k], tmp_path / f"{k}.png", n=1, scale=1, full_scale=0.5)))[1]
        for k in ("landmark-tps", "copy-onset")
    ]
    np.testing.assert_array_equal(keys[0], keys[1])
    np.testing.assert_array_equal(keys[0], direction_key(SIZE, 0.5))
    assert keys[0][SIZE // 2, SIZE // 2].max() < 20 and keys[0][SIZE // 2, -3].max() > 200


def test_flow_colours_and_scale() -> None:
    flow = np.zeros((4, 4, 2), np.float32)
    flow[0, 0] = (0.5, 0.0)  # right, full scale
    flow[0, 1] = (0.0, 0.25)  # down, half scale
    rgb = flow_colour(flow, 0.5)
    assert rgb[1:].max() == 0 and rgb[0, 0].max() == 255 and 120 <= rgb[0, 1].max() <= 130
    assert rgb[0, 0, 0] == 255 and rgb[0, 0, 1:].max() < 10  # hue 0 = red for motion to the right
    assert flow_scale([np.zeros((3, 8, 8, 2), np.float32)]) == 0.2  # a still preview: the floor
    moving = np.full((3, 8, 8, 2), (0.0, 0.737), np.float32)
    moving[0] = 0  # the onset: no motion, not counted (else a long still start would shrink the scale)
    assert flow_scale([moving, np.zeros((5, 8, 8, 2), np.float32)]) == 0.74
    wheel = direction_key(33, 1.0)
    assert wheel[16, 16].max() == 0 and wheel[0, 0].tolist() == [64, 64, 64]
