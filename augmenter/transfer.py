"""Transfer fidelity: how close a generator's clip of ANOTHER person's face is to the true transfer.

`augmenter generate` moves a target face of another person with a source clip's motion; self-reenactment
(augmenter.score) never tests that. On the demo corpus the true transfer is known: `demo-oracle` renders the
source clip's exact recorded plan on the target face. So for every pairing (source clip, target face of
another person), each generator's clip is compared with the oracle's clip of the same pairing:

- motion: onset → apex flow EPE (and cosine) against the oracle clip's flow, over the face (the target's
  landmark hull) and in the AU regions (augmenter.score.region_masks, the same regions as self-reenactment);
- appearance: the apex photometric error AFTER motion compensation. The generated apex is warped onto the
  oracle apex with the flow between the two apexes (oracle apex → generated apex), so the geometry a
  generator got wrong is taken out and what remains is appearance: the furrows, bulges and shading the demo
  renders. Mean absolute difference on a [0, 1] scale, in the AU regions (`apex_residual_au`) and over the
  face; `apex_l1_au` is the same difference without compensation. TV-L1 can explain part of a shading change
  as motion, so the residual is a lower bound on the appearance error;
- recognizer input: the (u, v, strain) planes the evaluation computes (recognition_eval.features, the same
  function and crop path as a synthetic clip of a store), resized to the recognizer's input as training does;
  mean per-pixel L2 distance of the planes (`planes_l2`; `planes_l2_crop` at the feature crop size).

Pairings are the planner's (augmenter.plan.make_plan, hash order of the oracle's checksum and the seed, at
most `max_per_source` per source clip): for a source whose every target can be served, they are the pairings
`generate` makes for the oracle store. A row of several weights files (the two FP-FOMM halves) serves a
pairing by the first generator that saw NEITHER the source nor the target person; a pairing no generator of
some row can serve so is passed over for the next one in hash order, so every row is scored, leakage-free, on
the same pairings. copy-onset (the target, motionless) and the oracle itself (a 0 row) are always in the
table; each column is also given as a ratio to copy-onset. Confidence intervals resample TARGET persons (the
pairings onto one person's face together). Per-pairing results go to `<out>.clips.jsonl` as they finish, so
a re-run scores only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.table import Table

from augmenter.cache import resolve_cache_dir
from augmenter.crops import DEFAULT_MARGIN
from augmenter.errors import UserError
from augmenter.face.base import FaceBackend
from augmenter.flow import AU_REGIONS, FlowMethod, optical_flow
from augmenter.generators import ClipGenerator, PreparedClip, TargetFace, generator_kind_of, load_generator
from augmenter.manifest import clip_key, read_manifest
from augmenter.plan import make_plan, targets_from_manifest
from augmenter.prepare import prepare_targets_from_manifest
from augmenter.progress import StageProgress
from augmenter.score import (
    COPY_ONSET,
    GeneratorOption,
    ScoreRow,
    _append_line,
    _check_device,
    _json_safe,
    _load_rows,
    _prepared,
    _read_clip_results,
    _row_of,
    _write_json_atomic,
    clips_path_for,
    flow_scores,
    has_seen,
    held_out_basis,
    person_bootstrap_ci,
    region_masks,
    select_clips,
)

ORACLE = "oracle"
DEMO_ORACLE = "demo-oracle"
TRANSFER_METRICS: tuple[str, ...] = (
    "flow_epe",
    "flow_epe_au",
    *(f"flow_epe_{region}" for region in AU_REGIONS),
    "flow_cos",
    "flow_cos_au",
    "apex_residual",
    "apex_residual_au",
    "apex_l1_au",
    "planes_l2",
    "planes_l2_crop",
)
# The columns of the printed table (every metric is in the JSON).
TABLE_METRICS: tuple[str, ...] = ("flow_epe", "flow_epe_au", "apex_residual_au", "planes_l2")
# Bumped when a metric's definition changes: per-pairing results of another version are not reused.
TRANSFER_VERSION = 1


@dataclass
class TransferReference:
    """The oracle's clip of one pairing, measured once and shared by every row."""

    frames: np.ndarray
    apex_index: int
    flow: np.ndarray
    masks: dict[str, np.ndarray]
    planes: np.ndarray  # (u, v, strain) at the feature crop size


@dataclass(frozen=True)
class PlaneSettings:
    """How the recognizer's input planes are made: the evaluation's feature settings and input size."""

    features: object  # recognition_eval.features.FeatureSettings
    input_size: int
    channels: tuple[int, ...]


def plane_settings(
    recognizer: str = "ststnet", crop_size: int = 128, method: str = "tvl1", backend: str = "dlib"
) -> PlaneSettings:
    """The planes `evaluate` would feed `recognizer` (its configured input size and channels)."""
    from recognition_eval.features import FeatureSettings
    from recognition_eval.models import recognizer_spec

    spec = recognizer_spec(recognizer)
    features = FeatureSettings(method=method, crop_size=crop_size, backend=backend)
    return PlaneSettings(features, spec.input_size, tuple(spec.channel_indices))


def _crop_planes(frames: np.ndarray, apex_index: int, identity: dict, settings: PlaneSettings) -> np.ndarray:
    """(u, v, strain) at the crop size, by the function the evaluation uses for a store's clip."""
    from recognition_eval.features import synthetic_clip_features

    # The evaluation caches planes; here each generated clip is measured once, so a throwaway cache.
    with tempfile.TemporaryDirectory(prefix="transfer-planes-") as folder:
        return synthetic_clip_features(frames, apex_index, identity, settings.features, folder).planes


def _input_planes(planes: np.ndarray, settings: PlaneSettings) -> np.ndarray:
    from recognition_eval.features import resize_planes

    return resize_planes(planes, settings.input_size)[..., list(settings.channels)]


def _plane_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over pixels of the L2 norm of the planes' difference (u, v, strain together)."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1).mean())


def warp_onto(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` (= b) sampled at (x + dx, y + dy) of the flow a → b: b's content put where it sits in a."""
    height, width = flow.shape[:2]
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(
        np.asarray(image, np.float32),
        cols + flow[..., 0],
        rows + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _mean_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if not mask.any():
        return float("nan")
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[mask].mean() / 255.0)


def transfer_reference(
    oracle_frames: np.ndarray,
    apex_index: int,
    target: TargetFace,
    planes: PlaneSettings,
    identity: dict,
    flow_method: FlowMethod = "tvl1",
) -> TransferReference:
    """The oracle clip's onset → apex flow, planes, and the target's face / AU-region masks."""
    frames = np.asarray(oracle_frames)
    return TransferReference(
        frames=frames,
        apex_index=int(apex_index),
        flow=optical_flow(frames[0], frames[apex_index], flow_method),
        masks=region_masks(target.landmarks, frames.shape[1:3]),
        planes=_crop_planes(frames, apex_index, identity, planes),
    )


def reference_motion(reference: TransferReference) -> dict[str, float]:
    """Mean length of the oracle's onset → apex flow over the face and the AU regions (copy-onset's EPE), and
    the same after subtracting the crop's median flow (`*_local`: what is left once head motion is taken out,
    as the recognizer's planes do)."""
    flow = reference.flow
    local = flow - np.median(flow.reshape(-1, 2), axis=0)
    motion = {}
    for region in ("face", "au"):
        mask = reference.masks[region]
        motion[region] = float(np.linalg.norm(flow, axis=-1)[mask].mean())
        motion[f"{region}_local"] = float(np.linalg.norm(local, axis=-1)[mask].mean())
    return motion


def score_transfer_frames(
    generated: np.ndarray,
    reference: TransferReference,
    planes: PlaneSettings,
    identity: dict,
    flow_method: FlowMethod = "tvl1",
) -> dict[str, float]:
    """Every TRANSFER_METRICS entry of one generated clip against the oracle clip of the same pairing."""
    generated = np.asarray(generated)
    if generated.shape != reference.frames.shape:
        raise ValueError(
            f"pairing {identity.get('pair_id')}: {identity.get('row')}'s clip {generated.shape} does not "
            f"match the oracle's {reference.frames.shape}"
        )
    apex, masks = reference.apex_index, reference.masks
    scores = flow_scores(optical_flow(generated[0], generated[apex], flow_method), reference.flow, masks)
    oracle_apex, generated_apex = reference.frames[apex], generated[apex]
    between = optical_flow(oracle_apex, generated_apex, flow_method)
    compensated = warp_onto(generated_apex, between)
    scores["apex_residual"] = _mean_abs(compensated, oracle_apex, masks["face"])
    scores["apex_residual_au"] = _mean_abs(compensated, oracle_apex, masks["au"])
    scores["apex_l1_au"] = _mean_abs(generated_apex, oracle_apex, masks["au"])
    crop = _crop_planes(generated, apex, identity, planes)
    scores["planes_l2_crop"] = _plane_distance(crop, reference.planes)
    scores["planes_l2"] = _plane_distance(
        _input_planes(crop, planes), _input_planes(reference.planes, planes)
    )
    return scores


# --- pairings ---


def _serving(row: ScoreRow, pairing: dict) -> int | None:
    """Index of the row's first generator that saw neither the source nor the target person, or None."""
    for index, generator in enumerate(row.generators):
        if not has_seen(generator, pairing["source_person"], pairing["source_subject"]) and not has_seen(
            generator, pairing["target_person"], pairing["target_subject"]
        ):
            return index
    return None


def transfer_pairings(
    chosen: pd.DataFrame, rows: Sequence[ScoreRow], checksum: str, seed: int = 0, max_per_source: int = 1
) -> tuple[pd.DataFrame, dict]:
    """The pairings every row is scored on, and how many of the planner's first choices were passed over.

    The planner's candidates (source × target of another person) in its hash order; per source the first
    `max_per_source` that every row can serve leakage-free (see the module docstring). The plan's columns
    plus `serve_<row>`: the index of the generator serving it.
    """
    if max_per_source < 1:
        raise UserError(f"max_per_source must be ≥ 1 (got {max_per_source})")
    candidates = make_plan(chosen, targets_from_manifest(chosen), generator_checksum=checksum, seed=seed)
    if candidates.empty:
        raise UserError(
            "transfer: no pairing of a source clip with another person's face; the clips chosen need at "
            "least two persons with a 3-class label"
        )
    candidates = candidates.sort_values("pair_id", kind="stable").reset_index(drop=True)
    records = candidates.to_dict("records")
    serve = {row.name: [_serving(row, record) for record in records] for row in rows}
    ok = np.ones(len(records), dtype=bool)
    for picks in serve.values():
        ok &= np.array([pick is not None for pick in picks])
    source = candidates["source_subject"] + "/" + candidates["source_clip"]
    first = candidates.groupby(source, sort=False).cumcount() < max_per_source
    for name, picks in serve.items():
        candidates[f"serve_{name}"] = [-1 if pick is None else pick for pick in picks]
    kept = candidates[ok]
    kept = kept[kept.groupby(source[ok], sort=False).cumcount() < max_per_source]
    info = {
        "candidates": len(candidates),
        "passed_over": int((first & ~ok).sum()),  # first choices of generate some row could not serve
        "sources": int(source.nunique()),
        "sources_left_out": int(source.nunique() - source[ok].nunique()),
    }
    if kept.empty:
        raise UserError(
            "transfer: no pairing can be served by every row without a generator that saw its source or "
            "target person; give generators trained without those persons"
        )
    plan = kept.sort_values(["source_subject", "source_clip", "target_id"], kind="stable")
    return plan.reset_index(drop=True), info


# --- rows ---


def _is_oracle(row: ScoreRow) -> bool:
    return all(generator_kind_of(spec) == DEMO_ORACLE for spec in row.specs)


def _transfer_rows(
    generators: Sequence[GeneratorOption], truth: Path, device: str, size: int | None
) -> tuple[list[ScoreRow], ScoreRow, int]:
    """The given rows, copy-onset, and the oracle row (the given demo-oracle row, else one reading `truth`),
    in that order; their common size."""
    options = list(generators)
    if not any(_is_oracle(_row_of(option)) for option in options):
        options.append((ORACLE, (f"{DEMO_ORACLE}:{truth}",)))
    loaded, size = _load_rows(options, device, size)
    oracle = next(row for row in loaded if _is_oracle(row))
    copy = load_generator(COPY_ONSET, device=device, size=size)
    rows = [row for row in loaded if row is not oracle]
    rows += [ScoreRow(COPY_ONSET, (COPY_ONSET,), [copy]), oracle]
    return rows, oracle, size


def _settings_digest(
    size: int, margin: float, flow_method: str, backend: FaceBackend, planes: PlaneSettings
) -> str:
    settings = {
        "version": TRANSFER_VERSION,
        "size": size,
        "margin": margin,
        "flow_method": flow_method,
        "backend": backend.name,
        "features": asdict(planes.features),  # type: ignore[call-overload]
        "input_size": planes.input_size,
        "channels": list(planes.channels),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# --- the table ---


def summarize_transfer(entries: Sequence[dict], name: str) -> dict:
    """Means over pairings of every metric, n_pairings, and a 95 % CI per metric resampling target persons."""
    summary: dict = {"name": name, "n_pairings": len(entries)}
    persons = [e["target_person"] for e in entries]
    for metric in TRANSFER_METRICS:
        values = np.array(
            [np.nan if e["scores"].get(metric) is None else e["scores"][metric] for e in entries], np.float64
        )
        finite = values[np.isfinite(values)]
        summary[metric] = float(finite.mean()) if finite.size else float("nan")
        summary[f"ci_{metric}"] = person_bootstrap_ci(values, persons)
    return summary


def _ratio(value: float, floor: float) -> float:
    if value is None or floor is None or not np.isfinite(value) or not np.isfinite(floor) or floor <= 0:
        return float("nan")
    return float(value / floor)


def _target_rows(chosen: pd.DataFrame) -> dict[str, dict]:
    return {clip_key(row): row for row in chosen.to_dict("records")}


def score_transfer(
    generators: Sequence[GeneratorOption],
    manifest_path: str | Path,
    root: str | Path,
    truth: str | Path | None = None,
    persons: Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
    max_per_source: int = 1,
    seed: int = 0,
    size: int | None = None,
    backend: FaceBackend | str = "dlib",
    device: str = "cpu",
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    flow_method: FlowMethod = "tvl1",
    margin: float = DEFAULT_MARGIN,
    recognizer: str = "ststnet",
    feature_crop_size: int = 128,
    progress: bool = True,
) -> dict:
    """One transfer table: every generator row, copy-onset and the oracle on the SAME pairings.

    `generators` as score_generators takes them (specs, "NAME=SPEC[,SPEC…]", ClipGenerators, (name, [...])
    pairs; a row of several weights files serves each pairing by the one that saw neither person). `truth`:
    the demo corpus root the oracle reads (default `root`). `persons` / `subjects` restrict the clips used
    as sources and targets; `max_per_source`, `seed`: the planner's (as `generate` takes them).
    `recognizer`, `feature_crop_size`: the evaluation's planes (EvaluateJob's recognizer and crop_size).
    With `out`, per-pairing results go to `<out>.clips.jsonl` (a re-run resumes) and the table to `out`.

    Returns {"unit": "target person", "n_pairings", "pair_ids", "target_persons", "source_persons", "size",
    "pairings": planner info, "reference_motion", "rows": {NAME: summary}, "copy_onset", "oracle"}; a summary
    holds the mean, `ci_<metric>` (95 %, target persons resampled) and `ratio_<metric>` (to copy-onset) of
    every TRANSFER_METRICS entry, n_pairings, specs, held_out and `served` (pairings per spec). Flow EPEs in
    pixels of the size² crop, apex errors on a [0, 1] scale, plane distances in the planes' units.
    """
    if isinstance(backend, str):
        from augmenter.face import get_face_backend

        backend = get_face_backend(backend)
    _check_device(device)
    truth_root = Path(truth if truth is not None else root).expanduser().resolve()
    rows, oracle_row, size = _transfer_rows(generators, truth_root, device, size)
    oracle = oracle_row.generators[0]
    manifest = read_manifest(manifest_path)
    chosen = select_clips(manifest, manifest_path, subjects, persons)
    plan, plan_info = transfer_pairings(chosen, rows, oracle.checksum, seed, max_per_source)
    planes = plane_settings(recognizer, feature_crop_size, flow_method, backend.name)
    settings = _settings_digest(size, margin, flow_method, backend, planes)
    cache = resolve_cache_dir(cache_dir, manifest_path)
    out_path = Path(out) if out is not None else None
    pairs_file = clips_path_for(out_path) if out_path is not None else None
    if pairs_file is not None:
        pairs_file.parent.mkdir(parents=True, exist_ok=True)
    finished = _read_clip_results(pairs_file, unit="pair_id")

    pairings = plan.to_dict("records")

    def needed(pairing: dict) -> list[tuple[ScoreRow, int]]:
        return [(row, int(pairing[f"serve_{row.name}"])) for row in rows]

    def done(pairing: dict, row: ScoreRow, pick: int) -> bool:
        return (pairing["pair_id"], row.name, row.generators[pick].checksum, settings) in finished

    todo = [i for i, p in enumerate(pairings) if not all(done(p, r, k) for r, k in needed(p))]
    records = chosen.to_dict("records")
    source_index = {clip_key(row): i for i, row in enumerate(records)}
    by_source: dict[int, list[int]] = {}
    for i in todo:
        key = f"{pairings[i]['source_subject']}/{pairings[i]['source_clip']}"
        by_source.setdefault(source_index[key], []).append(i)
    target_rows = _target_rows(chosen)
    targets: dict[str, TargetFace] = {}
    with StageProgress(
        "transfer", len(pairings), unit="pairings", enabled=progress, completed=len(pairings) - len(todo)
    ) as bar:
        for clip, index in _prepared(records, sorted(by_source), root, size, backend, cache, margin):
            for i in by_source[index]:
                pairing = pairings[i]
                if pairing["target_id"] not in targets:
                    frame = pd.DataFrame([target_rows[pairing["target_id"]]])
                    targets[pairing["target_id"]] = prepare_targets_from_manifest(
                        frame, root, size, backend, cache_dir=cache, margin=margin
                    )[0]
                _score_pairing(
                    pairing,
                    clip,
                    targets[pairing["target_id"]],
                    needed(pairing),
                    oracle,
                    planes,
                    settings,
                    flow_method,
                    finished,
                    pairs_file,
                )
                bar.advance()
    return _document(
        rows,
        oracle_row,
        pairings,
        plan_info,
        finished,
        settings,
        size,
        flow_method,
        planes,
        max_per_source,
        seed,
        out_path,
    )


def _score_pairing(
    pairing: dict,
    clip: PreparedClip,
    target: TargetFace,
    items: list[tuple[ScoreRow, int]],
    oracle: ClipGenerator,
    planes: PlaneSettings,
    settings: str,
    flow_method: FlowMethod,
    finished: dict,
    pairs_file: Path | None,
) -> None:
    """Score every missing row of one pairing against the oracle's clip; append each result as it is made."""
    identity = {"store": "transfer", "pair_id": pairing["pair_id"], "source_clip": clip.key}
    reference = transfer_reference(
        oracle.animate(clip, target),
        clip.apex_index,
        target,
        planes,
        {**identity, "row": ORACLE},
        flow_method,
    )
    motion = reference_motion(reference)
    for row, pick in items:
        generator = row.generators[pick]
        key = (pairing["pair_id"], row.name, generator.checksum, settings)
        if key in finished:
            continue
        row_identity = {**identity, "row": row.name, "checksum": generator.checksum}
        scores = score_transfer_frames(
            generator.animate(clip, target), reference, planes, row_identity, flow_method
        )
        entry = {
            "pair_id": pairing["pair_id"],
            "source_clip": clip.key,
            "source_person": pairing["source_person"],
            "target_id": pairing["target_id"],
            "target_person": pairing["target_person"],
            "row": row.name,
            "spec": row.specs[pick],
            "checksum": generator.checksum,
            "settings": settings,
            "reference_motion": motion,
            "scores": scores,
        }
        _append_line(pairs_file, entry)
        finished[key] = _json_safe(entry)


def _document(
    rows: list[ScoreRow],
    oracle_row: ScoreRow,
    pairings: list[dict],
    plan_info: dict,
    finished: dict,
    settings: str,
    size: int,
    flow_method: str,
    planes: PlaneSettings,
    max_per_source: int,
    seed: int,
    out_path: Path | None,
) -> dict:
    entries: dict[str, list[dict]] = {row.name: [] for row in rows}
    for pairing in pairings:
        for row in rows:
            pick = int(pairing[f"serve_{row.name}"])
            entries[row.name].append(
                finished[(pairing["pair_id"], row.name, row.generators[pick].checksum, settings)]
            )
    table = {}
    for row in rows:
        summary = summarize_transfer(entries[row.name], row.name)
        summary["specs"] = list(row.specs)
        summary["held_out"] = "+".join(sorted({held_out_basis(g) for g in row.generators}))
        served = pd.Series([e["spec"] for e in entries[row.name]]).value_counts()
        summary["served"] = {str(k): int(v) for k, v in served.items()}
        table[row.name] = summary
    floor = table[COPY_ONSET]
    for summary in table.values():
        for metric in TRANSFER_METRICS:
            summary[f"ratio_{metric}"] = _ratio(summary[metric], floor[metric])
    motion = [e["reference_motion"] for e in entries[COPY_ONSET]]
    document = {
        "unit": "target person",
        "n_pairings": len(pairings),
        "pair_ids": [p["pair_id"] for p in pairings],
        "target_persons": sorted({p["target_person"] for p in pairings}),
        "source_persons": sorted({p["source_person"] for p in pairings}),
        "size": size,
        "flow_method": flow_method,
        "au_regions": list(AU_REGIONS),
        "features": {**asdict(planes.features), "input_size": planes.input_size},  # type: ignore[call-overload]
        "pairings": {**plan_info, "max_per_source": max_per_source, "seed": seed},
        "reference_motion": {region: float(np.mean([m[region] for m in motion])) for region in motion[0]},
        "rows": table,
        "copy_onset": table[COPY_ONSET],
        "oracle": table[oracle_row.name],
    }
    if out_path is not None:
        _write_json_atomic(out_path, document)
    return _json_safe(document)  # type: ignore[return-value]  # what the JSON file holds (NaN → None)


def format_transfer_table(result: dict) -> Table:
    """The transfer table (rich): per row and column the mean [95 % CI over target persons] ×copy-onset."""
    pairing = result.get("pairings", {})
    title = (
        f"transfer fidelity vs the oracle on {result['n_pairings']} pairings, "
        f"{len(result['target_persons'])} target persons (at most {pairing.get('max_per_source')} per source)"
    )
    table = Table(title=title)
    table.add_column("generator", justify="left")
    table.add_column("pairings", justify="right")
    labels = {
        "flow_epe": "flow EPE face px",
        "flow_epe_au": "flow EPE AU px",
        "apex_residual_au": "apex residual AU",
        "planes_l2": "planes L2",
    }
    for metric in TABLE_METRICS:
        table.add_column(f"{labels[metric]} [95% CI] ×copy", justify="right")

    def cell(summary: dict, metric: str) -> str:
        value, (low, high) = summary.get(metric), summary.get(f"ci_{metric}", [None, None])
        if value is None or low is None or high is None or value != value:
            return "n/a"
        ratio = summary.get(f"ratio_{metric}")
        times = "" if ratio is None or ratio != ratio else f" ×{ratio:.2f}"
        return f"{value:.3f} [{low:.3f}, {high:.3f}]{times}"

    for name, summary in result["rows"].items():
        table.add_row(name, str(summary["n_pairings"]), *(cell(summary, m) for m in TABLE_METRICS))
    motion = result.get("reference_motion", {})
    if motion:
        table.caption = (
            f"oracle motion onset→apex: {motion['face']:.3f} px face, {motion['au']:.3f} px AU regions "
            f"(= copy-onset's EPE; {motion['face_local']:.3f} / {motion['au_local']:.3f} px without the "
            "median flow); apex residual after warping onto the oracle apex, [0, 1] scale"
        )
    return table
