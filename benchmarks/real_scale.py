"""A rehearsal of the README's real-data path at CASME II scale, on a stand-in frame tree.

The tree follows the real CASME II 2019 coding sheet shipped in tests/data (255 clips of 26 subjects, real
clip names and frame numbers onset..offset, `CASME2_RAW_selected/subXX/<clip>/imgN.jpg`); the pixels are demo
faces (augmenter.demo) moved by the sheet's AUs, so every stage meets the real clip count, clip lengths and
sheet quirks (the `/` apex of sub04 EP12_01f) without the licensed videos. Then it runs, as a user would, each
stage as an `augmenter` command: manifest build (the whole sheet, and the MEGC 2019 composite selection),
train ×2 (halves by person), score, generate --dry-run, generate ×2, evaluate on the composite manifest with
the whole manifest's persons known (`--known-manifest`); it ends with the evaluation's table. Every stage
uses the default preparation cache beside the manifest.

Prints one JSON line: {"stages": {NAME: {"wall_s", "cache_hits", "cache_misses", "peak_rss_mb", "ok"}},
"dry_run_estimate_s", "dry_run_store_gb", ...}. cache_hits / cache_misses are read from the cache's own
counters (augmenter.cache.cache_stats, summed over every process of the stage); a hit is any lookup that
skipped the face work, including a face fit reused at another crop size. peak_rss_mb is the largest sum of
the resident memory of the stage's process tree (sampled every 0.25 s). Each stage's output is in
WORK/logs/NAME.log.

    python benchmarks/real_scale.py --quick           # 6 subjects × 3 labelled clips, tiny steps: < 10 min
    python benchmarks/real_scale.py --warm            # all 255 clips; then every stage again on a warm cache
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from augmenter.cache import CACHE_ENV, CACHE_FOLDER, cache_stats  # noqa: E402
from augmenter.pool import map_in_processes  # noqa: E402

SHEET = REPO / "tests" / "data" / "CASME2-coding-20190701.xlsx"
RAW = "CASME2_RAW_selected"
# Emotions of the sheet that the 3-class protocol keeps (the rest, "others", has no 3-class label).
LABELLED = {"happiness", "disgust", "repression", "surprise", "fear", "sadness"}
# AUs for a clip whose sheet cell names none the demo renderer moves.
FALLBACK_AUS = {"happiness": (12,), "surprise": (1, 2), "fear": (1, 4), "sadness": (15,)}


@dataclasses.dataclass(frozen=True)
class Settings:
    """One rehearsal's scale: which clips, frame size, and the small step counts of every stage."""

    subjects: int | None  # None: every subject of the sheet
    clips_per_subject: int | None  # None: every clip; else the first N clips with a 3-class label
    size: int
    train_steps: int
    per_class: int
    epochs: int
    workers: int
    # subjects added to a partial selection: CASME II subject 10 is one the MEGC 2019 composite leaves out,
    # so the rehearsal meets a person the stores know and the composite evaluation does not test
    extra_subjects: tuple[int, ...] = ()


QUICK = Settings(
    subjects=6, clips_per_subject=3, size=128, train_steps=20, per_class=2, epochs=2, workers=2,
    extra_subjects=(10,),
)  # fmt: skip
FULL = Settings(
    subjects=None, clips_per_subject=None, size=128, train_steps=150, per_class=60, epochs=0, workers=2
)


# --- the stand-in tree ---


def select_rows(sheet: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The sheet rows of this rehearsal: all, or the subjects with most labelled clips and their first few."""
    if settings.subjects is None:
        return sheet
    labelled = sheet[sheet["Estimated Emotion"].astype(str).str.lower().isin(LABELLED)]
    counts = labelled.groupby("Subject").size().sort_values(ascending=False, kind="stable")
    chosen = sorted(set(counts.index[: settings.subjects]) | set(settings.extra_subjects))
    rows = labelled[labelled["Subject"].isin(chosen)]
    if settings.clips_per_subject is not None:
        rows = rows.groupby("Subject", sort=True).head(settings.clips_per_subject)
    return sheet.loc[rows.index]


def _aus(cell: object, emotion: str) -> tuple[int, ...]:
    from augmenter.demo.renderer import AU_MOVES

    numbers = tuple(sorted({int(n) for n in re.findall(r"\d+", str(cell)) if int(n) in AU_MOVES}))
    return numbers or FALLBACK_AUS.get(emotion.lower(), (4,))


def _render_task(task: tuple[dict, np.ndarray, np.ndarray, int, int, str]) -> int:
    """Render one sheet row's clip onto its subject's demo face and write its JPEG frames (atomically)."""
    from augmenter.demo.corpus import plan_clip
    from augmenter.demo.renderer import render_clip

    row, face_image, landmarks, size, seed, root = task
    subject = int(row["Subject"])
    onset, offset = int(row["OnsetFrame"]), int(row["OffsetFrame"])
    count = offset - onset + 1
    apex = pd.to_numeric(row["ApexFrame"], errors="coerce")
    apex_index = int(apex) - onset if pd.notna(apex) and onset <= int(apex) <= offset else count // 2
    rng = np.random.default_rng([seed, subject, sum(map(ord, str(row["Filename"])))])
    plan = plan_clip(rng, _aus(row["Action Units"], str(row["Estimated Emotion"])), size, (count, count))
    plan = dataclasses.replace(
        plan, apex_index=apex_index, weak_apex_index=int(np.clip(apex_index + 2, 1, count - 1))
    )
    frames, _ = render_clip(face_image, landmarks, plan, rng)
    folder = Path(root) / RAW / f"sub{subject:02d}" / str(row["Filename"])
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for index, frame in enumerate(frames):
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        if not ok:
            raise RuntimeError(f"{folder}: JPEG encoding failed")
        (staging / f"img{onset + index}.jpg").write_bytes(data.tobytes())
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return count


def build_tree(work: Path, settings: Settings, seed: int = 0) -> tuple[Path, Path, int, int]:
    """(dataset root, the sheet of its clips, clips, frames); reused when built before with the same rows."""
    sheet = pd.read_excel(SHEET, engine="openpyxl")
    rows = select_rows(sheet, settings)
    root = work / "CASME2"
    subset = work / f"CASME2-coding-{len(rows)}-clips.xlsx"
    marker = root / f".complete-{len(rows)}-{settings.size}-{seed}"
    frames = int((rows["OffsetFrame"].astype(int) - rows["OnsetFrame"].astype(int) + 1).sum())
    if not marker.is_file():
        from augmenter.demo.faces import demo_faces
        from augmenter.face import get_face_backend

        shutil.rmtree(root, ignore_errors=True)
        faces = demo_faces(int(rows["Subject"].max()), settings.size, get_face_backend("dlib"))
        tasks = [
            (
                row,
                faces[int(row["Subject"]) - 1].image,
                faces[int(row["Subject"]) - 1].landmarks,
                settings.size,
                seed,
                str(root),
            )
            for row in rows.to_dict("records")
        ]
        started = time.perf_counter()
        map_in_processes(_render_task, tasks, label="stand-in clips", unit="clips")
        print(
            f"stand-in tree: {len(rows)} clips, {frames} frames in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        rows.to_excel(subset, index=False)
        marker.write_text("done\n")
    elif not subset.is_file():
        rows.to_excel(subset, index=False)
    return root, subset, len(rows), frames


# --- running the stages ---


class PeakMemory:
    """Largest summed RSS of a process and its descendants, sampled in a thread while it runs."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for process in [root, *root.children(recursive=True)]:
                    try:
                        total += process.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def augmenter_command() -> list[str]:
    script = Path(sys.executable).with_name("augmenter")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli"]


def run_stage(name: str, args: list[str], work: Path, cache: Path, env: dict[str, str]) -> dict:
    """Run one `augmenter` command; its wall time, the cache's hits/misses during it, peak memory, ok."""
    log_path = work / "logs" / f"{name.replace(':', '-')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before = cache_stats(cache)
    print(f"[{name}] augmenter {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            augmenter_command() + args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        memory = PeakMemory(process.pid)
        code = process.wait()
        peak = memory.stop()
    wall = time.perf_counter() - started
    delta = cache_stats(cache) - before
    result = {
        "wall_s": round(wall, 1),
        "cache_hits": delta.hits + delta.partial,
        "cache_misses": delta.misses,
        "peak_rss_mb": round(peak / 2**20),
        "ok": code == 0,
    }
    print(f"[{name}] {json.dumps(result)} (log: {log_path})", file=sys.stderr, flush=True)
    return result


_ETA = re.compile(r"estimate: ([\d.]+) (s|min|h)\b")
_STORE = re.compile(r"store: ([\d.]+) GB")


def parse_dry_run(text: str) -> tuple[float | None, float | None]:
    """(estimated seconds, store GB) from `generate --dry-run`'s printed plan; None when absent."""
    eta, store = _ETA.search(text), _STORE.search(text)
    seconds = None
    if eta:
        seconds = float(eta.group(1)) * {"s": 1, "min": 60, "h": 3600}[eta.group(2)]
    return seconds, (float(store.group(1)) if store else None)


def rehearse(work: Path, root: Path, sheet: Path, settings: Settings, suffix: str, env: dict) -> dict:
    """Every stage of the README's real-data path once; stage names and output folders end in `suffix`."""
    from augmenter.manifest import read_manifest, row_person

    cache = work / CACHE_FOLDER
    tag = suffix.replace(":", "-")
    manifest = work / f"casme2{tag}.csv"
    stages: dict[str, dict] = {}
    extra: dict[str, float | str | None] = {"dry_run_estimate_s": None, "dry_run_store_gb": None}

    def stage(name: str, args: list[str]) -> bool:
        stages[name + suffix] = run_stage(name + suffix, args, work, cache, env)
        return stages[name + suffix]["ok"]

    common = ["--root", str(root)]
    composite = work / f"casme2-megc{tag}.csv"
    build = [
        "manifest",
        "build",
        "--dataset",
        "casme2",
        "--annotations",
        str(sheet),
        "--check-frames",
        *common,
    ]
    if not stage("manifest", [*build, "--out", str(manifest)]):
        return {"stages": stages, **extra}
    if not stage("manifest-megc", [*build, "--protocol", "megc2019", "--out", str(composite)]):
        return {"stages": stages, **extra}
    persons = sorted({row_person(row) for row in read_manifest(manifest).to_dict("records")})
    halves = {"a": persons[0::2], "b": persons[1::2]}
    runs = work / f"runs{tag}"
    for half, held_out in halves.items():
        if not stage(
            f"train-{half}",
            [
                "train",
                "--manifest",
                str(manifest),
                *common,
                "--config",
                "tiny-64",
                "--steps",
                str(settings.train_steps),
                "--device",
                "cpu",
                "--out",
                str(runs / f"gen-{half}"),
                "--exclude-persons",
                ",".join(held_out),
            ],
        ):
            return {"stages": stages, **extra}
    stage(
        "score-a",
        [
            "score",
            "--generator",
            str(runs / "gen-a" / "checkpoint.pt"),
            "--manifest",
            str(manifest),
            *common,
            "--persons",
            ",".join(halves["a"]),
            "--device",
            "cpu",
            "--out",
            str(runs / "gen-a" / "scores.json"),
        ],
    )
    plan = [
        "--manifest",
        str(manifest),
        *common,
        "--targets",
        str(manifest),
        "--strategy",
        "balanced",
        "--per-class",
        str(settings.per_class),
        "--workers",
        str(settings.workers),
        "--gpus",
        "none",
        "--no-identity-quality",
    ]
    synthetic = work / f"synthetic{tag}"
    dry = [
        "generate",
        *plan,
        "--generator",
        str(runs / "gen-a" / "checkpoint.pt"),
        "--out",
        str(synthetic / "a.zarr"),
        "--dry-run",
    ]
    if stage("generate-dry-run", dry):
        log = (work / "logs" / f"generate-dry-run{tag}.log").read_text()
        extra["dry_run_estimate_s"], extra["dry_run_store_gb"] = parse_dry_run(log)
    stores = []
    for half in halves:
        store = synthetic / f"{half}.zarr"
        if stage(
            f"generate-{half}",
            [
                "generate",
                *plan,
                "--generator",
                str(runs / f"gen-{half}" / "checkpoint.pt"),
                "--out",
                str(store),
            ],
        ):
            stores.append(store)
    evaluate = [
        "evaluate",
        "--recognizer",
        "resnet",
        "--manifest",
        str(composite),
        "--known-manifest",
        str(manifest),
        "--crop-size",
        "64",  # tiny-64's stores: one domain for real and synthetic clips
        *common,
        "--seeds",
        "0",
        "--workers",
        str(settings.workers),
        "--out",
        str(work / f"report{tag}"),
    ]
    if settings.epochs:
        evaluate += ["--epochs", str(settings.epochs)]
    for store in stores:
        evaluate += ["--synthetic", str(store)]
    stage("evaluate", evaluate)
    extra["report"] = str(work / f"report{tag}" / "report.json")
    return {"stages": stages, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 subjects × 3 clips, small steps (< 10 min)")
    parser.add_argument("--warm", action="store_true", help="run every stage again on the warm cache")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "augmenter-real-scale")
    parser.add_argument("--keep-cache", action="store_true", help="start from the cache a previous run left")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    work = (args.work / ("quick" if args.quick else "full")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    root, sheet, clips, frames = build_tree(work, settings)
    build_s = time.perf_counter() - started
    cache = work / CACHE_FOLDER
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    for pattern in ("runs*", "synthetic*", "report*", "casme2*.csv*", "logs"):  # outputs of an earlier run
        for path in work.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    env = {
        k: v for k, v in os.environ.items() if k != CACHE_ENV
    }  # the default: the cache beside the manifest
    env.setdefault("AUGMENTER_PROGRESS_INTERVAL", "10")
    result = rehearse(work, root, sheet, settings, "", env)
    if args.warm:
        warm = rehearse(work, root, sheet, settings, ":warm", env)
        result["stages"].update(warm["stages"])
        result["warm_dry_run_estimate_s"] = warm["dry_run_estimate_s"]
    result.update(
        {
            "quick": args.quick,
            "clips": clips,
            "frames": frames,
            "frame_size": settings.size,
            "cores": len(os.sched_getaffinity(0)),
            "tree_build_s": round(build_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
        }
    )
    line = json.dumps(result)
    (work / "real-scale.json").write_text(line + "\n")
    print(line)
    report = Path(result.get("report") or "")
    if report.is_file():  # the recipe's last word: the evaluation table on the composite manifest
        from rich.console import Console

        from recognition_eval.report import summary_table

        Console(width=160).print(summary_table(json.loads(report.read_text())))
    if not all(stage["ok"] for stage in result["stages"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
