"""Generator scores by self-reenactment: animate each held-out clip's own onset frame with its own motion.

The real clip is then the ground truth of the generated one, so appearance (L1), geometry (AKD), identity
(AED) and — what matters for micro-expressions — motion (flow EPE / cosine, onset → apex) can be compared
directly. Motion is measured over the whole face and inside the AU regions (augmenter.flow.au_region_masks:
between the brows, the cheeks, the nasolabial folds), skin whose motion the 68 landmarks do not carry. Every
score is reported beside "copy-onset" (the onset frame repeated, i.e. no motion), the floor a generator must
beat: ME motion is so small that L1 alone rewards doing nothing.

One table, one clip set: all generators of a run are scored on the same clips of the same held-out persons,
and the real clip's flow, landmarks and embedding are measured once per clip and shared by every row. A row
may be several weights files (the two-halves recipe): each clip is then scored by the first of them that
never saw the clip's person. Per-clip results are appended to `<out>.clips.jsonl` as they are made, so a
re-run (after a kill, or with one more generator) scores only what is missing.

What `generate` does — move ANOTHER person's face — is scored by augmenter.transfer (against the demo
oracle's clip of the same pairing), with the masks, flow scores and bootstrap of this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmenter.cache import resolve_cache_dir
from augmenter.crops import DEFAULT_MARGIN
from augmenter.errors import UserError
from augmenter.face.base import FaceBackend, FaceBox
from augmenter.flow import AU_REGIONS, FlowMethod, au_region_masks, end_point_error, face_mask, optical_flow
from augmenter.generators import ClipGenerator, PreparedClip, TargetFace, generator_kind_of, load_generator
from augmenter.manifest import read_manifest, row_fold_key, row_person
from augmenter.prepare import prepare_clips, select_subjects
from augmenter.progress import StageProgress

# Flow metrics per region: the face, the union of the AU regions, and each AU region on its own.
REGION_METRICS: tuple[str, ...] = (
    "flow_epe_au",
    "flow_cos_au",
    *(f"flow_epe_{region}" for region in AU_REGIONS),
)
METRICS: tuple[str, ...] = ("l1", "akd", "aed", "flow_epe", "flow_cos", *REGION_METRICS)
# Pixels whose real flow is under this are left out of the cosine: their direction is TV-L1 noise.
COSINE_MIN_FLOW_PX = 0.2
COPY_ONSET = "copy-onset"
# Bumped when a metric's definition changes: per-clip results of another version are not reused.
SCORE_VERSION = 2
BOOTSTRAP_RESAMPLES = 2000


def crop_face_box(size: int, margin: float = DEFAULT_MARGIN) -> FaceBox:
    """The face box inside a prepared crop: prepare_clip grew the detected box by `margin` on every side."""
    side = size / (1.0 + 2.0 * margin)
    low = int(round((size - side) / 2.0))
    return FaceBox(low, low, size - low, size - low)


def flow_cosine(
    flow: np.ndarray, reference: np.ndarray, mask: np.ndarray, min_px: float = COSINE_MIN_FLOW_PX
) -> float:
    """Mean cosine similarity of two flows where the reference moves more than `min_px` inside `mask`.

    A zero flow scores 0 there (no direction is no agreement); NaN when the reference barely moves anywhere.
    """
    reference_length = np.linalg.norm(reference, axis=-1)
    where = mask & (reference_length > min_px)
    if not where.any():
        return float("nan")
    length = np.linalg.norm(flow, axis=-1)
    dot = (flow[..., 0] * reference[..., 0] + flow[..., 1] * reference[..., 1])[where]
    denominator = (length * reference_length)[where]
    cosine = np.divide(dot, denominator, out=np.zeros_like(dot), where=denominator > 1e-8)
    return float(cosine.mean())


def _landmark_tracks(backend: FaceBackend, frames: np.ndarray, box: FaceBox) -> np.ndarray:
    return np.stack([backend.landmarks(frame, box) for frame in frames]).astype(np.float32)


@dataclass
class ClipReference:
    """What the real clip looks like to the scorer, measured once and shared by every generator."""

    clip: PreparedClip
    box: FaceBox
    tracks: np.ndarray
    apex_identity: np.ndarray
    flow: np.ndarray
    masks: dict[str, np.ndarray]


def clip_reference(
    clip: PreparedClip, backend: FaceBackend, margin: float = DEFAULT_MARGIN, flow_method: FlowMethod = "tvl1"
) -> ClipReference:
    """Real landmarks per frame, apex embedding, onset → apex flow and the face / AU-region masks."""
    real = clip.frames
    box = crop_face_box(real.shape[1], margin)
    masks = region_masks(clip.landmarks[0], real.shape[1:3])
    return ClipReference(
        clip=clip,
        box=box,
        tracks=_landmark_tracks(backend, real, box),
        apex_identity=backend.embedding(real[clip.apex_index], box),
        flow=optical_flow(real[0], real[clip.apex_index], flow_method),
        masks=masks,
    )


def region_masks(landmarks68: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The masks every flow score is measured in: "face" (the landmarks' hull), "au" and each AU region."""
    masks = au_region_masks(landmarks68, shape)
    masks["face"] = face_mask(landmarks68, shape)
    return masks


def _flow_scores(flow: np.ndarray, reference: ClipReference) -> dict[str, float]:
    return flow_scores(flow, reference.flow, reference.masks)


def flow_scores(flow: np.ndarray, real: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """EPE and cosine of `flow` against the `real` flow over the face and the AU regions (region_masks)."""
    scores = {
        "flow_epe": end_point_error(flow, real, masks["face"]),
        "flow_cos": flow_cosine(flow, real, masks["face"]),
        "flow_epe_au": end_point_error(flow, real, masks["au"]),
        "flow_cos_au": flow_cosine(flow, real, masks["au"]),
    }
    for region in AU_REGIONS:
        scores[f"flow_epe_{region}"] = end_point_error(flow, real, masks[region])
    return scores


def score_frames(
    generated: np.ndarray, reference: ClipReference, backend: FaceBackend, flow_method: FlowMethod = "tvl1"
) -> dict[str, float]:
    """Scores of one generated clip against the real one (same frame count and size)."""
    real = reference.clip.frames
    if generated.shape != real.shape:
        raise ValueError(
            f"{reference.clip.key}: generated clip {generated.shape} does not match the real {real.shape}"
        )
    apex = reference.clip.apex_index
    # Landmarks and embeddings are measured the same way (same box, same resolution) on real and generated
    # frames, so detector noise is shared rather than counted as an error of the generator.
    tracks = _landmark_tracks(backend, generated, reference.box)
    identity = backend.embedding(generated[apex], reference.box)
    scores = {
        "l1": float(np.abs(generated.astype(np.float32) - real.astype(np.float32)).mean() / 255.0),
        "akd": float(np.linalg.norm(tracks - reference.tracks, axis=-1).mean()),
        "aed": float(np.linalg.norm(identity - reference.apex_identity)),
    }
    scores.update(_flow_scores(optical_flow(generated[0], generated[apex], flow_method), reference))
    return scores


def score_copy_onset(reference: ClipReference, backend: FaceBackend) -> dict[str, float]:
    """copy-onset's scores, exactly: every frame is the onset, so its flow is zero and its tracks still."""
    real = reference.clip.frames
    identity = backend.embedding(real[0], reference.box)
    scores = {
        "l1": float(np.abs(real[:1].astype(np.float32) - real.astype(np.float32)).mean() / 255.0),
        "akd": float(np.linalg.norm(reference.tracks[:1] - reference.tracks, axis=-1).mean()),
        "aed": float(np.linalg.norm(identity - reference.apex_identity)),
    }
    scores.update(_flow_scores(np.zeros_like(reference.flow), reference))
    return scores


def score_clip(
    generated: np.ndarray,
    clip: PreparedClip,
    backend: FaceBackend,
    margin: float = DEFAULT_MARGIN,
    flow_method: FlowMethod = "tvl1",
) -> dict[str, dict[str, float]]:
    """Scores of one generated clip and of copy-onset against the real `clip`: {"generator", "copy-onset"}."""
    reference = clip_reference(clip, backend, margin, flow_method)
    return {
        "generator": score_frames(generated, reference, backend, flow_method),
        COPY_ONSET: score_copy_onset(reference, backend),
    }


# --- rows: which generators, on which clips ---


@dataclass
class ScoreRow:
    """One row of the table: a name and the generators that score its clips (first held-out one wins)."""

    name: str
    specs: tuple[str, ...]
    generators: list[ClipGenerator] = field(default_factory=list)


def parse_generator_option(text: str) -> tuple[str | None, tuple[str, ...]]:
    """`[NAME=]SPEC[,SPEC…]` → (NAME or None, specs). Several specs make one row (one generator per half)."""
    name, equals, rest = text.partition("=")
    if not equals or "/" in name or ":" in name:  # no name: "=" may belong to a path
        name, rest = "", text
    specs = tuple(s.strip() for s in rest.split(",") if s.strip())
    if not specs:
        raise UserError(f"--generator {text!r}: no generator given; write [NAME=]SPEC[,SPEC...]")
    return (name.strip() or None), specs


def default_row_name(specs: Sequence[str]) -> str:
    """A registered kind's name ("demo-oracle:/x" → "demo-oracle"); a weights file's run folder or stem."""
    names = []
    for spec in specs:
        kind = generator_kind_of(spec)
        if kind is not None:
            names.append(kind)
            continue
        path = Path(spec)
        stem = path.name.split(".")[0]
        names.append(path.parent.name if stem == "checkpoint" and path.parent.name else stem)
    return "+".join(names)


def is_training_free(generator: ClipGenerator) -> bool:
    from augmenter.generators import TORCH_FREE_KINDS

    return bool(getattr(generator, "training_free", False)) or generator.kind in TORCH_FREE_KINDS


def held_out_basis(generator: ClipGenerator) -> str:
    """How a clip is known to be unseen: "training-free", "persons", "subjects", or "unknown" (no list)."""
    if is_training_free(generator):
        return "training-free"
    if tuple(getattr(generator, "training_persons", ()) or ()):
        return "persons"
    if tuple(generator.training_subjects or ()):
        return "subjects"
    return "unknown"


def has_seen(generator: ClipGenerator, person: str, subject: str) -> bool:
    """Whether the weights saw this clip's person (by person when recorded, else by "dataset/subject")."""
    basis = held_out_basis(generator)
    if basis == "persons":
        return person in set(generator.training_persons)
    if basis == "subjects":
        return subject in set(generator.training_subjects)
    return False


GeneratorOption = str | Path | ClipGenerator | tuple[str | None, Sequence[str | ClipGenerator]]


def _row_of(option: GeneratorOption) -> ScoreRow:
    """A row from one option; ready generators stay, specs are loaded later (placeholders None)."""
    if isinstance(option, str | Path):
        name, items = parse_generator_option(str(option))
    elif isinstance(option, tuple):
        name, items = option[0], tuple(option[1])
    else:
        name, items = None, (option,)
    specs = tuple(item if isinstance(item, str) else item.kind for item in items)
    generators = [None if isinstance(item, str) else item for item in items]
    return ScoreRow(name or default_row_name(specs), specs, generators)  # type: ignore[arg-type]


def _load_rows(
    options: Sequence[GeneratorOption], device: str, size: int | None
) -> tuple[list[ScoreRow], int]:
    """Load every row's generators; learned ones first, so their size fixes the training-free ones'."""
    rows = [_row_of(option) for option in options]
    if any(not row.specs for row in rows):
        raise UserError("score: a generator row without generators; write [NAME=]SPEC[,SPEC...]")
    names = [row.name for row in rows]
    if COPY_ONSET in names:
        raise UserError("copy-onset is scored beside every generator already; leave it out of --generator")
    if len(set(names)) != len(names):
        raise UserError(f"generator rows {names}: names must be unique; give each one as NAME=SPEC")
    for row in rows:
        for index, spec in enumerate(row.specs):
            if row.generators[index] is None and generator_kind_of(spec) is None:
                row.generators[index] = load_generator(spec, device=device, size=size)
    sizes = {g.size for row in rows for g in row.generators if g is not None}
    if size is None:
        size = sizes.pop() if len(sizes) == 1 else (128 if not sizes else None)
        if size is None:
            raise UserError(
                f"generators of sizes {sorted(sizes)} cannot share one clip set; score them apart"
            )
    elif sizes - {size}:
        raise UserError(f"generators of sizes {sorted(sizes)} cannot be scored at --size {size}")
    for row in rows:
        for index, spec in enumerate(row.specs):
            if row.generators[index] is None:
                row.generators[index] = load_generator(spec, device=device, size=size)
    return rows, int(size)


def select_clips(
    manifest: pd.DataFrame,
    manifest_path: str | Path,
    subjects: Iterable[str] | None = None,
    persons: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The clips to score: of the given persons (the manifest's person column) and/or subjects."""
    chosen = select_subjects(manifest, list(subjects) if subjects is not None else None)
    if persons is not None:
        wanted = {str(p) for p in persons}
        chosen = chosen[[row_person(row) in wanted for _, row in chosen.iterrows()]]
    if chosen.empty:
        known_persons = ", ".join(sorted({row_person(row) for _, row in manifest.iterrows()}))
        asked = sorted(persons or []) if persons is not None else sorted(subjects or [])
        raise UserError(
            f"{manifest_path}: no clips of {'persons' if persons is not None else 'subjects'} {asked}; "
            f"the manifest's persons are {known_persons}"
        )
    return chosen


def _assign(rows: list[ScoreRow], chosen: pd.DataFrame) -> dict[str, list[int]]:
    """Per row, the index of the generator that scores each clip; refuses clips every generator saw."""
    assignment: dict[str, list[int]] = {}
    for row in rows:
        picks = []
        for _, clip_row in chosen.iterrows():
            person, subject = row_person(clip_row), row_fold_key(clip_row)
            pick = next(
                (i for i, g in enumerate(row.generators) if not has_seen(g, person, subject)),
                None,
            )
            if pick is None:
                raise UserError(
                    f"{row.name}: was trained on person {person} ({subject}), which is scored here; "
                    "score held-out persons only (--persons), or give a generator that never saw them"
                )
            picks.append(pick)
        assignment[row.name] = picks
    return assignment


# --- per-clip results on disk ---


def clips_path_for(out: Path) -> Path:
    """Where the per-clip results of `out` live: scores.json → scores.clips.jsonl."""
    return out.with_name(out.name.removesuffix(".json") + ".clips.jsonl")


def _read_clip_results(path: Path | None, unit: str = "clip") -> dict[tuple[str, str, str, str], dict]:
    """Finished per-clip results keyed by (entry[unit], row, generator checksum, settings); a torn last line
    (being written when the run stopped) is cut off. `unit` is the field naming what was scored ("clip", or
    "pair_id" for transfer scores)."""
    results: dict[tuple[str, str, str, str], dict] = {}
    if path is None or not path.is_file():
        return results
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # cut the torn tail so the next line starts on its own
        text = text[: text.rfind("\n") + 1]
        with path.open("r+", encoding="utf-8") as stream:
            stream.truncate(len(text.encode("utf-8")))
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            results[(entry[unit], entry["row"], entry["checksum"], entry["settings"])] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return results


def _append_line(path: Path | None, entry: dict) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps({k: _json_safe(v) for k, v in entry.items()}, allow_nan=False) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def _json_safe(value: object) -> object:
    """NaN is not JSON: write null instead, so every JSON reader can load the scores."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _write_json_atomic(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(_json_safe(document), stream, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- summaries ---


def person_bootstrap_ci(
    values: Sequence[float], persons: Sequence[str], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float]:
    """95 % interval of the clip mean, resampling persons (clips of one person are not independent)."""
    values_array = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values_array)
    if not keep.any():
        return [float("nan"), float("nan")]
    frame = pd.DataFrame({"v": values_array[keep], "p": np.asarray(persons)[keep]})
    sums = frame.groupby("p")["v"].agg(["sum", "count"])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums["sum"].to_numpy()[picks].sum(1) / sums["count"].to_numpy()[picks].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(entries: Sequence[dict], name: str) -> dict:
    """Means over clips of every metric (NaN-free clips only), n_clips, and a person-bootstrap CI on the
    flow EPEs."""
    summary: dict = {"name": name}
    for metric in METRICS:
        values = np.array(
            [np.nan if e["scores"].get(metric) is None else e["scores"][metric] for e in entries],
            dtype=np.float64,
        )
        finite = values[np.isfinite(values)]
        summary[metric] = float(finite.mean()) if finite.size else float("nan")
    summary["n_clips"] = len(entries)
    persons = [e["person"] for e in entries]
    for metric in ("flow_epe", "flow_epe_au"):
        summary[f"ci_{metric}"] = person_bootstrap_ci([e["scores"].get(metric) for e in entries], persons)
    return summary


def _settings_digest(size: int, margin: float, flow_method: str, backend: FaceBackend) -> str:
    settings = {
        "version": SCORE_VERSION,
        "size": size,
        "margin": margin,
        "flow_method": flow_method,
        "backend": backend.name,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# Clips prepared together (in a process pool, one process per core) before they are scored one by one.
PREPARE_CHUNK = 16


def _prepared(
    records: list[dict],
    indices: list[int],
    root: str | Path,
    size: int,
    backend: FaceBackend,
    cache: Path | None,
    margin: float,
) -> Iterator[tuple[PreparedClip, int]]:
    """(prepared clip, its index) for the given rows, prepared a chunk at a time over the machine's cores,
    so only one chunk of clips is held in memory while the scoring (one process) catches up."""
    for start in range(0, len(indices), PREPARE_CHUNK):
        chunk = indices[start : start + PREPARE_CHUNK]
        clips = prepare_clips(
            [records[i] for i in chunk], root, size, backend.name, cache, margin, progress=False
        )
        yield from zip(clips, chunk, strict=True)


def score_generators(
    generators: Sequence[GeneratorOption],
    manifest_path: str | Path,
    root: str | Path,
    persons: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
    size: int | None = None,
    backend: FaceBackend | str = "dlib",
    device: str = "cpu",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    flow_method: FlowMethod = "tvl1",
    margin: float = DEFAULT_MARGIN,
    progress: bool = True,
) -> dict:
    """One table: every generator row and copy-onset, scored by self-reenactment on ONE set of clips.

    `generators`: specs as `load_generator` takes them ("landmark-tps", "demo-oracle:ROOT", a .pt file),
    "NAME=SPEC[,SPEC…]" texts, ready ClipGenerators, or (name, [spec or ClipGenerator, …]) pairs.
    `persons` (the manifest's person column) and/or `subjects` ("1" or "casme2/1") choose the clips; default
    all. A clip whose person a row's weights saw is refused (by person when the checkpoint records its
    persons, else by subject). `size` defaults to the checkpoints' own (training-free only: 128). With
    `out`, per-clip results go to `<out>.clips.jsonl` as they finish (a re-run resumes) and the table to
    `out` atomically.

    Returns {"unit": "person", "persons", "n_clips", "size", "rows": {NAME: summary}, "generator": the first
    row's summary, "copy_onset": copy-onset's}; a summary holds the mean of every METRICS entry, n_clips,
    ci_flow_epe / ci_flow_epe_au (95 %, persons resampled), specs and held_out (how "unseen" is known).
    l1 is on a [0, 1] scale, akd and flow EPEs in pixels of the size² crop, aed in the backend's units.
    """
    if isinstance(backend, str):
        from augmenter.face import get_face_backend

        backend = get_face_backend(backend)
    _check_device(device)
    if not generators:
        raise UserError("score: no generator given; pass --generator landmark-tps or a checkpoint")
    rows, size = _load_rows(generators, device, size)
    manifest = read_manifest(manifest_path)
    chosen = select_clips(manifest, manifest_path, subjects, persons)
    assignment = _assign(rows, chosen)
    settings = _settings_digest(size, margin, flow_method, backend)
    cache = resolve_cache_dir(cache_dir, manifest_path)
    out_path = Path(out) if out is not None else None
    clips_file = clips_path_for(out_path) if out_path is not None else None
    if clips_file is not None:
        clips_file.parent.mkdir(parents=True, exist_ok=True)
    finished = _read_clip_results(clips_file)

    keys = [f"{r['dataset']}/{r['subject']}/{r['clip_id']}" for _, r in chosen.iterrows()]
    # Per clip, the (row, checksum, generator, spec) of every score it needs; copy-onset has no generator.
    needed = [
        [
            (row.name, row.generators[pick].checksum, row.generators[pick], row.specs[pick])
            for row in rows
            for pick in (assignment[row.name][index],)
        ]
        + [(COPY_ONSET, COPY_ONSET, None, COPY_ONSET)]
        for index in range(len(keys))
    ]
    todo = [
        [item for item in items if (key, item[0], item[1], settings) not in finished]
        for key, items in zip(keys, needed, strict=True)
    ]
    already = sum(1 for items in todo if not items)
    pending = [i for i, items in enumerate(todo) if items]
    records = chosen.to_dict("records")
    with StageProgress("score", len(keys), unit="clips", enabled=progress, completed=already) as bar:
        for clip, index in _prepared(records, pending, root, size, backend, cache, margin):
            clip_row, key, items = records[index], keys[index], todo[index]
            reference = clip_reference(clip, backend, margin, flow_method)
            target = TargetFace(clip.key, row_fold_key(clip_row), clip.frames[0], clip.landmarks[0])
            for name, checksum, generator, spec in items:
                if generator is None:
                    scores = score_copy_onset(reference, backend)
                else:
                    scores = score_frames(generator.animate(clip, target), reference, backend, flow_method)
                entry = {
                    "clip": key,
                    "person": row_person(clip_row),
                    "subject": row_fold_key(clip_row),
                    "row": name,
                    "spec": spec,
                    "checksum": checksum,
                    "settings": settings,
                    "scores": scores,
                }
                _append_line(clips_file, entry)
                finished[(key, name, checksum, settings)] = _json_safe(entry)  # type: ignore[assignment]
            bar.advance()
    entries: dict[str, list[dict]] = {row.name: [] for row in rows}
    entries[COPY_ONSET] = []
    for key, items in zip(keys, needed, strict=True):
        for name, checksum, _, _ in items:
            entries[name].append(finished[(key, name, checksum, settings)])
    table = {row.name: summarize(entries[row.name], row.name) for row in rows}
    for row in rows:
        table[row.name]["specs"] = list(row.specs)
        bases = sorted({held_out_basis(g) for g in row.generators})
        table[row.name]["held_out"] = "+".join(bases)
        if "unknown" in bases:
            print(
                f"score: {row.name} records no training persons or subjects; whether its clips are held out "
                "is unknown",
                file=sys.stderr,
            )
    table[COPY_ONSET] = summarize(entries[COPY_ONSET], COPY_ONSET)
    table[COPY_ONSET].update({"specs": [COPY_ONSET], "held_out": "training-free"})
    document = {
        "unit": "person",
        "persons": sorted({row_person(r) for _, r in chosen.iterrows()}),
        "n_clips": len(chosen),
        "size": size,
        "flow_method": flow_method,
        "au_regions": list(AU_REGIONS),
        "rows": table,
        "generator": table[rows[0].name],
        "copy_onset": table[COPY_ONSET],
    }
    if out_path is not None:
        _write_json_atomic(out_path, document)
    return document


def _check_device(device: str) -> None:
    """A device this install cannot provide (CUDA on a CPU-only torch): one line, before any work starts."""
    if str(device) in ("cpu", ""):
        return
    from augmenter.devices import resolve_device

    resolve_device(device)


def score_generator(
    generator_spec: str | Path | ClipGenerator,
    manifest_path: str | Path,
    root: str | Path,
    subjects: Iterable[str] | None = None,
    size: int | None = None,
    backend: FaceBackend | str = "dlib",
    device: str = "cpu",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    flow_method: FlowMethod = "tvl1",
    persons: Iterable[str] | None = None,
    progress: bool = True,
) -> dict:
    """One generator beside copy-onset: `score_generators` with a single row (see there)."""
    return score_generators(
        [generator_spec],
        manifest_path,
        root,
        persons=persons,
        subjects=subjects,
        size=size,
        backend=backend,
        device=device,
        out=out,
        cache_dir=cache_dir,
        flow_method=flow_method,
        progress=progress,
    )


def format_table(document: dict) -> str:
    """The score table as plain text: one line per row, flow EPE face / AU regions with their person CIs."""
    header = (
        f"{'generator':<24} {'clips':>5} {'flow_epe [95% CI]':>24} {'flow_epe_au [95% CI]':>24} "
        f"{'cos':>6} {'cos_au':>6} {'L1':>7}"
    )
    lines = [f"self-reenactment on {document['n_clips']} clips of {len(document['persons'])} persons", header]

    def cell(summary: dict, metric: str) -> str:
        low, high = summary.get(f"ci_{metric}", [None, None])
        value = summary.get(metric)
        if value is None or low is None or high is None:
            return "n/a"
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"

    def number(value: float | None, digits: int) -> str:
        return "n/a" if value is None or value != value else f"{value:.{digits}f}"

    for name, summary in document["rows"].items():
        lines.append(
            f"{name:<24} {summary['n_clips']:>5} {cell(summary, 'flow_epe'):>24} "
            f"{cell(summary, 'flow_epe_au'):>24} {number(summary.get('flow_cos'), 3):>6} "
            f"{number(summary.get('flow_cos_au'), 3):>6} {number(summary.get('l1'), 4):>7}"
        )
    return "\n".join(lines)
