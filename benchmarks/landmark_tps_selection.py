"""Choose landmark-tps' defaults (tracking, smoothing, dead-band) on validation persons; report on others.

A demo corpus with the `augmenter demo` settings (another corpus seed) is split by PERSON
(benchmarks/person_splits.py): the test persons are those the FP-FOMM ablation reports on; every other
person validates here (landmark-tps learns nothing, so the ablation's training persons may validate it).
Each setting of the grid animates every validation clip's own onset with its own motion; its onset → apex
flow EPE (TV-L1, inside the face and in the AU regions) against the real clip's decides. The best setting and
the current default are then scored on the test persons with `augmenter.score.score_generators` (full
metrics, one clip set, beside copy-onset and the demo-oracle ceiling). Output: OUT/selection.json, a table.

    python benchmarks/landmark_tps_selection.py --out /tmp/tps-selection
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from person_splits import demo_manifest, split_persons

from augmenter.face import get_face_backend
from augmenter.flow import au_region_masks, end_point_error, face_mask, optical_flow
from augmenter.generators.base import TargetFace
from augmenter.generators.landmark_tps import (
    DEFAULT_DEAD_BAND_PX,
    DEFAULT_SIGMA_FRAMES,
    DEFAULT_TRACKING,
    LandmarkTPSGenerator,
)
from augmenter.manifest import row_fold_key, row_person
from augmenter.prepare import prepare_clip
from augmenter.progress import StageProgress
from augmenter.score import format_table, score_generators
from augmenter.warp import warp_forward

TRACKINGS = ("dis", "farneback", "landmarks")
SIGMAS = (0.0, 1.0, 2.0)
DEAD_BANDS = (0.0, 0.25, 0.5)


def grid() -> list[dict]:
    return [
        {"tracking": t, "sigma_frames": s, "dead_band_px": d}
        for t, s, d in itertools.product(TRACKINGS, SIGMAS, DEAD_BANDS)
    ]


def apex_errors(generator: LandmarkTPSGenerator, clip, target: TargetFace, real_flow, masks) -> tuple:
    """Face and AU-region flow EPE of the generated apex (only the apex frame is warped: the same field the
    generator's animate() would use there)."""
    field = generator.displacement_fields(clip, target)[clip.apex_index]
    apex = warp_forward(target.image, field)
    flow = optical_flow(target.image, apex)
    return end_point_error(flow, real_flow, masks["face"]), end_point_error(flow, real_flow, masks["au"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=9)
    parser.add_argument("--clips-per-subject", type=int, default=8)
    parser.add_argument("--corpus-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64, help="crop size scored (the demo's model size)")
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    manifest_path, root, manifest = demo_manifest(
        args.out, args.subjects, args.clips_per_subject, args.corpus_size, (16, 32)
    )
    split = split_persons(manifest, n_validation=2, n_test=3, seed=args.split_seed)
    selecting = set(split.train + split.validation)
    backend = get_face_backend("dlib")
    cache = args.out / "cache"
    settings = grid()
    per_setting: list[list[tuple[float, float, str]]] = [[] for _ in settings]
    rows = [row for _, row in manifest.iterrows() if row_person(row) in selecting]
    with StageProgress("validation clips", len(rows), unit="clips") as progress:
        for row in rows:
            clip = prepare_clip(row, root, args.size, backend, cache_dir=cache)
            target = TargetFace(clip.key, row_fold_key(row), clip.frames[0], clip.landmarks[0])
            real_flow = optical_flow(clip.frames[0], clip.frames[clip.apex_index])
            masks = au_region_masks(clip.landmarks[0], clip.frames.shape[1:3])
            masks["face"] = face_mask(clip.landmarks[0], clip.frames.shape[1:3])
            copy = end_point_error(np.zeros_like(real_flow), real_flow, masks["face"])
            for index, setting in enumerate(settings):
                generator = LandmarkTPSGenerator(size=args.size, **setting)
                face, au = apex_errors(generator, clip, target, real_flow, masks)
                per_setting[index].append((face, au, row_person(row), copy))
            progress.advance()
    table = []
    for setting, values in zip(settings, per_setting, strict=True):
        face = np.array([v[0] for v in values])
        au = np.array([v[1] for v in values])
        table.append({**setting, "flow_epe": float(face.mean()), "flow_epe_au": float(np.nanmean(au))})
    copy_onset = float(np.mean([v[3] for v in per_setting[0]]))
    table.sort(key=lambda entry: entry["flow_epe"])
    best = {k: table[0][k] for k in ("tracking", "sigma_frames", "dead_band_px")}
    current = {
        "tracking": DEFAULT_TRACKING,
        "sigma_frames": DEFAULT_SIGMA_FRAMES,
        "dead_band_px": DEFAULT_DEAD_BAND_PX,
    }
    print(
        f"validation: {len(rows)} clips of persons {sorted(selecting)}; copy-onset flow EPE {copy_onset:.3f}"
    )
    print(f"{'tracking':<10} {'sigma':>5} {'dead-band':>9} {'flow_epe':>9} {'flow_epe_au':>11}")
    for entry in table:
        print(
            f"{entry['tracking']:<10} {entry['sigma_frames']:>5.2f} {entry['dead_band_px']:>9.2f} "
            f"{entry['flow_epe']:>9.4f} {entry['flow_epe_au']:>11.4f}"
        )
    rows_to_score = [("selected", [LandmarkTPSGenerator(size=args.size, **best)])]
    if best != current:
        rows_to_score.append(("current-default", [LandmarkTPSGenerator(size=args.size, **current)]))
    rows_to_score.append(("demo-oracle", [f"demo-oracle:{root.resolve()}"]))
    test = score_generators(
        rows_to_score,
        manifest_path,
        root,
        persons=split.test,
        size=args.size,
        backend=backend,
        out=args.out / "test-scores.json",
        cache_dir=cache,
    )
    print(format_table(test))
    document = {
        "split": split.as_dict(),
        "validation_persons": sorted(selecting),
        "validation_clips": len(rows),
        "validation_copy_onset_flow_epe": copy_onset,
        "grid": table,
        "selected": best,
        "current_default": current,
        "test": test,
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    (args.out / "selection.json").write_text(json.dumps(document, indent=1, default=str))
    print(json.dumps({"selected": best, "current_default": current, "minutes": document["minutes"]}))


if __name__ == "__main__":
    main()
