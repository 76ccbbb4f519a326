"""The demo corpus: real faces moved by FACS-faithful micro-movements, written exactly like CASME II.

Why: the real ME datasets are licensed and cannot ship, yet every stage (readers, manifest, generator
training, recognition) must run end to end in CI and in a first-time user's hands. The corpus uses the real
CASME II layout (`CASME2_RAW_selected/subNN/EPxx_yy/imgN.jpg`, frames numbered from the onset, not from 1)
and a sheet in the real 2019 coding format, so the same readers load it unchanged. Extra columns to the
right of the real ones, and a `demo-truth.json` sidecar, record what was generated (true AUs, amplitude,
landmarks, skin effects, the whole clip plan and head-jitter path, distractors) for tests and for the
`demo-oracle` generator. `persons.csv` (`dataset,subject,person`) says which real person each subject is:
subjects beyond the distinct people are variants of one of them (augmenter/demo/faces.py), and the manifest
step applies it (`read_person_map` + `with_persons`) so that folds, pairings and the leakage guard work on
people, never on variants.

The motion model lives in augmenter/demo/renderer.py (landmark motion, skin effects between landmarks and
their shading, distractors).

Difficulty (chosen with baseline and oracle recognition runs only, never with a generator's arm in view;
numbers in the README's demo section): amplitudes `AMPLITUDE_PX`, distractors (blinks, an unrelated weak AU
near the apex, head jitter, sensor noise, lighting drift) below.
"""

from __future__ import annotations

import csv
import datetime
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

from augmenter.demo.renderer import AU_MOVES, REFERENCE_SIZE, ClipPlan, render_clip
from augmenter.errors import UserError

RAW_FOLDER = "CASME2_RAW_selected"
ANNOTATION_FILE = "CASME2-coding-demo.xlsx"
TRUTH_FILE = "demo-truth.json"
PERSONS_FILE = "persons.csv"
DATASET = "casme2"  # the reader the corpus is written for, and the dataset its manifest rows carry
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
# Difficulty, calibrated with baseline and oracle runs only (never a generator's arm) on a corpus drawn with
# a calibration seed (1; the demo reports seed 0) of the same 9 persons, with the demo's evaluation (LOSO by
# person, STSTNet 30 epochs = 120 steps, 3 seeds, persons × seeds bootstrap). Amplitudes 0.5–2 px: baseline
# UF1 0.800, oracle +0.014 [-0.043, +0.074] (one pairing per source), +0.019 (three). 0.35–1.4 px: 0.727,
# oracle +0.028 [-0.026, +0.082]; three pairings +0.046 [-0.014, +0.098]; 12 clips per person 0.725 / +0.022;
# oracle rendered at 128² +0.046 [-0.019, +0.115]; recognizer crops at 64² 0.712 / -0.020. 0.25–1 px: 0.707 /
# +0.024. 0.35–1.4 px puts the baseline where leakage-free ME recognizers are (≈ 0.65–0.75); in no setting
# is the oracle's gain outside the person-level CI at 9 persons. The distractors were set earlier with ResNet.
AMPLITUDE_PX = (0.35, 1.4)  # largest landmark displacement at the apex, at 128²
JPEG_QUALITY = 92
BLINK_PROBABILITY = 0.35
WEAK_AU_PROBABILITY = 0.8  # an unrelated AU co-occurring near the apex
WEAK_AU_GAIN = (0.5, 1.1)  # its amplitude relative to the clip's
JITTER_PX = (0.1, 0.4)  # RMS head jitter at 128²
NOISE_SIGMA = (2.0, 4.0)  # sensor noise, grey levels
LIGHT_DRIFT = 0.04  # largest relative gain change (global and left-right) over a clip
# zip entry times and workbook dates, so the sheet's bytes are reproducible
FIXED_TIMESTAMP = (2019, 7, 1, 0, 0, 0)

# (label3, AU string as CASME II writes it, CASME II emotion word, objective class as the 2019 sheet gives
# it for these AUs). Negative uses disgust/repression, the words MEGC 2019 maps to "negative" for CASME II.
RECIPES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "negative": (
        ("4", "disgust", 3),
        ("4+7", "disgust", 3),
        ("9", "disgust", 3),
        ("14", "repression", 7),
        ("15", "repression", 5),
    ),
    "positive": (("12", "happiness", 1), ("6+12", "happiness", 1)),
    "surprise": (("1+2", "surprise", 2), ("1+2+5", "surprise", 2)),
}


@dataclass(frozen=True)
class DemoCorpus:
    """Where `make_demo_corpus` wrote: `root` is the dataset root a manifest's paths are relative to."""

    root: Path
    annotations: Path
    truth: Path
    clips: int
    seconds: float
    persons: Path | None = None


@dataclass
class ClipTruth:
    """Everything generated for one clip (one row of the sheet, one entry of demo-truth.json)."""

    subject: str
    filename: str
    identity: str  # the real person; variants of one person share it
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
    # (68, 2) the AU motion (landmark field + skin effects) at each landmark at the apex (no distractors)
    apex_displacement: list[list[float]]
    apex_global_shift: list[float]  # head jitter at the apex minus at the onset (x, y) px
    distractors: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)  # ClipPlan.as_dict(): re-renders the clip's motion exactly
    global_shift: list[list[float]] = field(default_factory=list)  # (T, 2) head jitter per frame
    skin_effects: list[dict] = field(default_factory=list)  # the AU's appearance changes between landmarks

    @property
    def person(self) -> str:
        return self.identity


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
    weak_apex = int(np.clip(apex_index + rng.integers(-3, 4), 1, n_frames - 1))
    return ClipPlan(
        aus=aus,
        amplitude_px=float(rng.uniform(*AMPLITUDE_PX) * scale),
        n_frames=n_frames,
        apex_index=apex_index,
        blink_start=blink_start,
        blink_frames=blink_frames,
        weak_au=weak_au,
        weak_gain=float(rng.uniform(*WEAK_AU_GAIN)),
        weak_apex_index=weak_apex,
        jitter_px=float(rng.uniform(*JITTER_PX) * scale),
        noise_sigma=float(rng.uniform(*NOISE_SIGMA)),
        light_gain=float(rng.uniform(-LIGHT_DRIFT, LIGHT_DRIFT)),
        light_tilt=float(rng.uniform(-LIGHT_DRIFT, LIGHT_DRIFT)),
    )


# --- writing ---


def encode_jpeg(frame: np.ndarray) -> bytes:
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
        (staging / f"img{first_number + index}.jpg").write_bytes(encode_jpeg(frame))
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
    from augmenter.demo.faces import demo_faces
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
                    plan=plan.as_dict(),
                    global_shift=motion["global_shift"],
                    skin_effects=motion["skin_effects"],
                )
            )
            if progress is not None:
                progress(len(rows), total)
    annotations = write_casme2_sheet(rows, out / ANNOTATION_FILE)
    persons = write_persons(faces, out / PERSONS_FILE)
    truth_path = out / TRUTH_FILE
    settings = {
        "subjects": subjects,
        "clips_per_subject": clips_per_subject,
        "size": size,
        "seed": seed,
        "frames": list(frames),
    }
    _write_json_atomically({"settings": settings, "clips": [asdict(row) for row in rows]}, truth_path)
    return DemoCorpus(
        root=out,
        annotations=annotations,
        truth=truth_path,
        clips=len(rows),
        seconds=round(time.perf_counter() - started, 2),
        persons=persons,
    )


def manifest_subject(subject_index: int) -> str:
    """The subject id the CASME II reader gives sheet subject `subject_index + 1` ("01" → "1")."""
    return str(subject_index + 1)


def write_persons(faces: list, path: Path) -> Path:
    """`persons.csv` (dataset,subject,person): the real person of every subject, for `read_person_map`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "subject", "person"])
    for index, face in enumerate(faces):
        writer.writerow([DATASET, manifest_subject(index), face.identity])
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    temporary.replace(path)
    return path


def read_demo_persons(corpus_root: Path) -> dict[str, str]:
    """{fold key: person} of a corpus (empty for a corpus written before persons existed)."""
    from augmenter.manifest import read_person_map

    path = Path(corpus_root) / PERSONS_FILE
    return read_person_map(path, DATASET) if path.is_file() else {}


def read_demo_truth(corpus_root: Path) -> list[ClipTruth]:
    """The generated ground truth of a corpus, one `ClipTruth` per clip (what tests measure against)."""
    path = Path(corpus_root) / TRUTH_FILE
    if not path.is_file():
        raise UserError(f"{path}: demo truth not found; generate the corpus with `augmenter demo-data`")
    return [ClipTruth(**clip) for clip in json.loads(path.read_text(encoding="utf-8"))["clips"]]
