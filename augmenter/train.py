"""Train FP-FOMM on the clips of a manifest: pairs of frames of one clip, resumable, atomic checkpoints.

The motion fixes measured in DESIGN §5a are config switches: tracked keypoints (the driving frame's smoothed
landmarks move the driving keypoints), a teacher-flow loss (face-masked L1 between the dense motion and TV-L1
driving → source), no background motion channel, and an output path that keeps the pixel warp.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from augmenter.cache import resolve_cache_dir
from augmenter.devices import resolve_device
from augmenter.errors import UserError
from augmenter.face.prior import au_points_normalized
from augmenter.flow import face_mask
from augmenter.generators.base import PreparedClip
from augmenter.generators.fpfomm import keypoint_tracks, tps_landmarks, uses_landmark_tps
from augmenter.manifest import read_manifest, row_fold_key, row_person
from augmenter.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from augmenter.model.config import load_config, merge_config
from augmenter.model.losses import (
    RandomTPS,
    ReconstructionLoss,
    VGG19Features,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    teacher_flow_loss,
)
from augmenter.model.networks import Networks
from augmenter.prepare import prepare_clips_with_flows
from augmenter.progress import StageProgress
from augmenter.teacher_flows import flows_to_onset

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"


@dataclass(frozen=True)
class TrainResult:
    """Where the weights are and what they saw."""

    checkpoint: Path
    steps: int
    seconds: float
    training_subjects: tuple[str, ...]
    losses: dict[str, float]
    config_name: str
    training_persons: tuple[str, ...] = ()


@dataclass
class ClipTensors:
    """One prepared clip as training tensors (kept uint8 until a batch is drawn)."""

    key: str
    frames: torch.Tensor  # uint8 (T, 3, S, S)
    points: torch.Tensor  # (T, 18, 2) normalised keypoints the model sees for each frame
    mask: torch.Tensor  # (1, S, S) float face mask of the onset
    teacher: torch.Tensor | None  # (T, 2, S, S) flow driving(t) → onset in pixels, or None
    landmarks: torch.Tensor | None = None  # (T, L, 2) normalised tracked landmarks (landmark TPS motion)


def drop_subjects(manifest: pd.DataFrame, exclude_subjects: Iterable[str]) -> pd.DataFrame:
    """Rows whose subject is not excluded; values as in the subject column ("1") or fold keys ("casme2/1")."""
    excluded = {str(s) for s in exclude_subjects}
    keys = manifest["dataset"].astype(str) + "/" + manifest["subject"].astype(str)
    keep = ~(manifest["subject"].astype(str).isin(excluded) | keys.isin(excluded))
    return manifest[keep]


def drop_persons(manifest: pd.DataFrame, exclude_persons: Iterable[str]) -> pd.DataFrame:
    """Rows whose person (manifest `person` column, see augmenter.manifest.row_person) is not excluded."""
    excluded = {str(p) for p in exclude_persons}
    if not excluded:
        return manifest
    persons = [row_person(row) for row in manifest.to_dict("records")]
    unknown = sorted(excluded - set(persons))
    if unknown:
        raise UserError(
            f"--exclude-persons {', '.join(unknown)}: no such person in the manifest (persons look like "
            f"{', '.join(sorted(set(persons))[:3])}); check the spelling"
        )
    return manifest[[person not in excluded for person in persons]]


def persons_still_training(full: pd.DataFrame, kept: pd.DataFrame) -> list[str]:
    """Persons of excluded rows that still train through another subject: a subject split that leaks."""
    kept_persons = {row_person(row) for row in kept.to_dict("records")}
    dropped = full.drop(index=kept.index)
    return sorted({row_person(row) for row in dropped.to_dict("records")} & kept_persons)


def clip_tensors(
    clip: PreparedClip, config: dict[str, Any], cache_dir: Path | None, flows: np.ndarray | None = None
) -> ClipTensors:
    """Training tensors of one clip: frames, per-frame keypoints (tracked or onset), face mask, teacher
    flows (`flows` when already prepared, else computed here, cached in `cache_dir`)."""
    size = int(config["model"]["size"])
    train = config["train"]
    tracks = keypoint_tracks(clip, config)
    points = au_points_normalized(tracks, size)
    landmarks = tps_landmarks(tracks, size) if uses_landmark_tps(config) else None
    mask = torch.from_numpy(face_mask(clip.landmarks[0], (size, size))).float()[None]
    teacher = None
    if train["teacher_flow"] > 0:
        if flows is None:
            flows = flows_to_onset(clip, train["teacher_method"], cache_dir)
        teacher = torch.from_numpy(flows).permute(0, 3, 1, 2).contiguous()
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2).contiguous()
    return ClipTensors(clip.key, frames, points, mask, teacher, landmarks)


def draw_batch(
    clips: Sequence[ClipTensors], batch_size: int, pairs: str, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch of (source, driving) frame pairs from single clips; "onset" pairs start at the onset."""
    chosen = torch.randint(len(clips), (batch_size,), generator=generator).tolist()
    batch: dict[str, list[torch.Tensor]] = {
        k: []
        for k in (
            "source",
            "driving",
            "source_points",
            "driving_points",
            "source_landmarks",
            "driving_landmarks",
            "mask",
            "teacher",
        )
    }
    for index in chosen:
        clip = clips[index]
        length = clip.frames.shape[0]
        if pairs == "onset":
            source, driving = 0, int(torch.randint(1, max(2, length), (1,), generator=generator)) % length
        else:
            source, driving = torch.randint(length, (2,), generator=generator).tolist()
        batch["source"].append(clip.frames[source])
        batch["driving"].append(clip.frames[driving])
        batch["source_points"].append(clip.points[source])
        batch["driving_points"].append(clip.points[driving])
        if clip.landmarks is not None:
            batch["source_landmarks"].append(clip.landmarks[source])
            batch["driving_landmarks"].append(clip.landmarks[driving])
        batch["mask"].append(clip.mask)
        if clip.teacher is not None and source == 0:
            batch["teacher"].append(clip.teacher[driving])
    out = {k: torch.stack(v) for k, v in batch.items() if v and len(v) == batch_size}
    out["source"] = out["source"].float() / 255.0
    out["driving"] = out["driving"].float() / 255.0
    return out


def learning_rate(config: dict[str, Any], step: int, total_steps: int) -> float:
    """Base rate ×0.1 at every milestone passed (milestones are fractions of the run)."""
    train = config["train"]
    drops = sum(step >= int(fraction * total_steps) for fraction in train["milestones"])
    return float(train["lr"]) * (0.1**drops)


class Trainer:
    """Networks, optimisers and the loss of one training step (also used directly by tests)."""

    def __init__(
        self, config: dict[str, Any], device: torch.device, vgg: VGG19Features | None = None
    ) -> None:
        self.config = config
        self.device = device
        self.networks = Networks(config).to(device)
        train = config["train"]
        betas = tuple(train["betas"])
        motion_params = list(self.networks.kp_detector.parameters()) + list(
            self.networks.generator.parameters()
        )
        self.optimizer = torch.optim.Adam(motion_params, lr=train["lr"], betas=betas)
        self.gan = float(train["gan"]) > 0
        self.optimizer_discriminator = torch.optim.Adam(
            self.networks.discriminator.parameters(), lr=train["lr"], betas=betas
        )
        self.reconstruction = ReconstructionLoss(train["perceptual_scales"], vgg.to(device) if vgg else None)
        self.amp = device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    def set_learning_rate(self, rate: float) -> None:
        for optimizer in (self.optimizer, self.optimizer_discriminator):
            for group in optimizer.param_groups:
                group["lr"] = rate

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Weighted generator-side losses of one batch (keys: reconstruction, teacher, equivariance, gan,
        ...)."""
        train = self.config["train"]
        kp_detector, net = self.networks.kp_detector, self.networks.generator
        source, driving = batch["source"], batch["driving"]
        kp_source = kp_detector(source, batch["source_points"])
        kp_driving = kp_detector(driving, batch["driving_points"])
        if "source_landmarks" in batch:
            kp_source["landmarks"] = batch["source_landmarks"]
            kp_driving["landmarks"] = batch["driving_landmarks"]
        out = net(source, kp_driving, kp_source)
        losses: dict[str, torch.Tensor] = {}
        losses["reconstruction"] = train["perceptual"] * self.reconstruction(
            out["prediction"].float(), driving
        )
        if train["teacher_flow"] > 0 and "teacher" in batch:
            losses["teacher"] = train["teacher_flow"] * teacher_flow_loss(
                out["deformation"], batch["teacher"], batch["mask"]
            )
        if train["equivariance_jacobian"] > 0:
            tps = RandomTPS(
                driving.shape[0],
                train["equivariance_sigma_affine"],
                train["equivariance_sigma_tps"],
                train["equivariance_points_tps"],
                generator=generator,
                device=driving.device,
            )
            warped_points = tps.inverse(batch["driving_points"])
            kp_warped = kp_detector(tps.warp_image(driving), warped_points)
            chained = tps.jacobian(warped_points) @ kp_warped["jacobian"]
            # J_d⁻¹ · (∂T · J_warped) should be the identity (float32: inverting in half precision is
            # unstable).
            value = torch.linalg.solve(kp_driving["jacobian"].float(), chained.float())
            identity = torch.eye(2, device=value.device)
            losses["equivariance"] = train["equivariance_jacobian"] * (identity - value).abs().mean()
        if self.gan:
            fake = self.networks.discriminator(out["prediction"])
            real = self.networks.discriminator(driving)
            losses["gan"] = train["gan"] * lsgan_generator_loss(fake)
            if train["feature_matching"] > 0:
                losses["feature_matching"] = train["feature_matching"] * feature_matching_loss(real, fake)
        self._last_prediction = out["prediction"].detach()
        return losses

    def step(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, float]:
        """One optimisation step of the generator side (and the discriminator when the GAN is on)."""
        self.networks.train()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():
            losses = self.losses(batch, generator)
            total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        values = {k: float(v.detach()) for k, v in losses.items()}
        if self.gan:
            with self._autocast():
                real = self.networks.discriminator(batch["driving"])
                fake = self.networks.discriminator(self._last_prediction)
                loss_d = lsgan_discriminator_loss(real, fake)
            self.optimizer_discriminator.zero_grad(set_to_none=True)
            self.scaler.scale(loss_d).backward()
            self.scaler.step(self.optimizer_discriminator)
            values["discriminator"] = float(loss_d.detach())
        self.scaler.update()
        values["total"] = float(total.detach())
        return values

    def payload(
        self,
        step: int,
        training_subjects: Sequence[str],
        losses: dict[str, float],
        training_persons: Sequence[str] = (),
        provenance: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The checkpoint: weights, optimiser state, config and who the weights saw (subjects and persons;
        `provenance` records e.g. the weights a fine-tuning run started from)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": int(step),
            "config": self.config,
            "training_subjects": list(training_subjects),
            "training_persons": list(training_persons),
            **({"provenance": dict(provenance)} if provenance else {}),
            "losses": dict(losses),
            "kp_detector": self.networks.kp_detector.state_dict(),
            "generator": self.networks.generator.state_dict(),
            "discriminator": self.networks.discriminator.state_dict(),
            "optimizer_generator": self.optimizer.state_dict(),
            "optimizer_discriminator": self.optimizer_discriminator.state_dict(),
        }

    def restore(self, payload: dict[str, Any]) -> None:
        self.networks.kp_detector.load_state_dict(payload["kp_detector"])
        self.networks.generator.load_state_dict(payload["generator"])
        self.networks.discriminator.load_state_dict(payload["discriminator"])
        self.optimizer.load_state_dict(payload["optimizer_generator"])
        self.optimizer_discriminator.load_state_dict(payload["optimizer_discriminator"])

    def load_weights(self, payload: dict[str, Any], where: str | Path) -> None:
        """Start from another checkpoint's weights (fine-tuning): networks only, fresh optimisers; a
        discriminator that is absent or of another shape starts from scratch."""
        for name in ("kp_detector", "generator", "discriminator"):
            if name not in payload:
                if name == "discriminator":
                    continue
                raise UserError(f"{where}: no {name} weights; give an augmenter or imported checkpoint")
            try:
                getattr(self.networks, name).load_state_dict(payload[name])
            except RuntimeError as exc:
                if name == "discriminator":
                    continue
                raise UserError(
                    f"{where}: its {name} weights do not fit its own config ({str(exc)[:100]}); the "
                    "checkpoint is damaged"
                ) from None


def _resolve_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(config, dict):
        return merge_config(config, "config dict")
    return load_config(config)


def _step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one step, so a resumed run draws the same batches as an uninterrupted one."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _initial_weights(
    init: str | Path, config_dict: dict[str, Any], trained_on: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(init payload, config with the init's network layout, provenance naming the init file and the
    subjects and persons its weights saw).

    Weights whose checkpoint records nobody are of UNKNOWN provenance: the run is refused unless
    `trained_on` says whom they saw, so a fine-tuned checkpoint never claims a shorter list than the truth.
    """
    payload, digest = load_checkpoint(init)
    if "config" not in payload or "model" not in payload["config"]:
        raise UserError(
            f"{init}: no network config in the checkpoint; import foreign weights first with "
            "`augmenter checkpoint import`"
        )
    subjects = sorted(str(s) for s in payload.get("training_subjects", ()))
    persons = sorted({str(p) for p in payload.get("training_persons", ())} | set(trained_on))
    if not subjects and not persons:
        raise UserError(
            f"{init}: the checkpoint records no training subjects or persons (unknown provenance); pass "
            "--trained-on PERSONS naming whom its weights saw"
        )
    config = merge_config({**config_dict, "model": payload["config"]["model"]}, f"{init} + training settings")
    provenance = {
        "init": str(init),
        "init_sha256": digest,
        "inherited_subjects": subjects,
        "inherited_persons": persons,
    }
    return payload, config, provenance


def train(
    manifest: str | Path | pd.DataFrame,
    root: str | Path,
    config: str | Path | dict[str, Any],
    out_dir: str | Path,
    steps: int | None = None,
    resume: bool = False,
    exclude_subjects: Iterable[str] = (),
    vgg_weights: str | Path | None = None,
    device: str | torch.device = "auto",
    face_backend: str = "dlib",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    exclude_persons: Iterable[str] = (),
    init: str | Path | None = None,
    trained_on: Iterable[str] = (),
    workers: int | None = None,
) -> TrainResult:
    """Train (or resume) FP-FOMM; writes out_dir/checkpoint.pt (+ .sha256) every `checkpoint_every` steps
    and at the end, and out_dir/train_log.jsonl. Excluded subjects and persons never reach the model.

    The checkpoint records the fold keys and persons of the training rows, plus, when fine-tuning from
    `init`, whom those weights saw (their record and `trained_on`). Clips are prepared over `workers`
    processes through the shared preparation cache (`cache_dir`, see augmenter.cache.resolve_cache_dir).
    """
    started = time.monotonic()
    console = Console(stderr=True, soft_wrap=True)  # a log file gets whole lines
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    trained_on = tuple(str(p).strip() for p in trained_on if str(p).strip())
    payload = None
    init_payload = None
    provenance: dict[str, Any] | None = None
    if checkpoint_path.is_file():
        if not resume:
            raise UserError(
                f"{checkpoint_path}: a checkpoint already exists; pass --resume to continue it or "
                "choose another --out"
            )
        payload, _ = load_checkpoint(checkpoint_path)
        config_dict = payload["config"]
        provenance = payload.get("provenance")
        console.print(f"resuming {checkpoint_path} at step {payload['step']}", highlight=False)
    else:
        if resume:
            console.print(f"no checkpoint in {out_dir} yet: starting from step 0", highlight=False)
        config_dict = _resolve_config(config)
        if init is not None:
            init_payload, config_dict, provenance = _initial_weights(init, config_dict, trained_on)
            console.print(
                f"fine-tuning from {init} (its network layout, the training settings of {config})",
                highlight=False,
            )
        elif trained_on:
            raise UserError("--trained-on records whom initial weights saw; give it with --init CHECKPOINT")
    total_steps = int(steps if steps is not None else config_dict["train"]["steps"])
    if total_steps <= 0:
        raise UserError(f"--steps {total_steps}: give a positive number of steps")
    train_cfg = config_dict["train"]
    full = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    frame = drop_persons(drop_subjects(full, exclude_subjects), exclude_persons)
    where = manifest if not isinstance(manifest, pd.DataFrame) else "manifest"
    if frame.empty:
        raise UserError(
            f"{where}: no clips left after --exclude-subjects/--exclude-persons; exclude fewer subjects"
        )
    leaking = persons_still_training(full, frame)
    if leaking:
        console.print(
            f"[yellow]warning:[/yellow] excluded subjects' persons {', '.join(leaking[:5])} still train "
            "through other subjects; use --exclude-persons to keep a person out",
            highlight=False,
        )
    records = frame.to_dict("records")
    inherited = provenance or {}
    training_subjects = tuple(
        sorted({row_fold_key(row) for row in records} | set(inherited.get("inherited_subjects", ())))
    )
    training_persons = tuple(
        sorted({row_person(row) for row in records} | set(inherited.get("inherited_persons", ())))
    )
    if payload is not None:
        recorded_subjects = tuple(payload["training_subjects"])
        recorded_persons = tuple(payload.get("training_persons", training_persons))  # older: subjects only
        if (recorded_subjects, recorded_persons) != (training_subjects, training_persons):
            raise UserError(
                f"{checkpoint_path}: was trained on other subjects or persons ({len(recorded_subjects)} / "
                f"{len(recorded_persons)}) than this manifest minus the exclusions ({len(training_subjects)} "
                f"/ {len(training_persons)}); resume with the same --manifest, --exclude-subjects and "
                "--exclude-persons"
            )
    torch_device = resolve_device(device)
    cache = resolve_cache_dir(cache_dir, manifest, fallback=out_dir / "cache")
    size = int(config_dict["model"]["size"])
    teacher = train_cfg["teacher_method"] if train_cfg["teacher_flow"] > 0 else None
    # Preparation first, while this process runs no torch work: the pool's processes are forked from it.
    prepared = prepare_clips_with_flows(
        frame, root, size, face_backend, cache, flows_method=teacher, workers=workers, progress=progress,
        keep_going=True,
    )  # fmt: skip
    clips = [
        clip_tensors(clip, config_dict, cache, flows) for clip, flows in prepared if len(clip.frames) >= 2
    ]
    if not clips:
        raise UserError(f"{where}: every clip has fewer than 2 frames; nothing to train on")
    torch.manual_seed(int(train_cfg["seed"]))
    vgg = VGG19Features.from_file(vgg_weights) if vgg_weights is not None else None
    trainer = Trainer(config_dict, torch_device, vgg)
    console.print(f"reconstruction loss: {trainer.reconstruction.description}", highlight=False)
    if payload is not None:
        trainer.restore(payload)
    elif init_payload is not None:
        trainer.load_weights(init_payload, init)
    start_step = int(payload["step"]) if payload is not None else 0

    out_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, float] = dict(payload.get("losses", {})) if payload is not None else {}
    every = max(1, int(train_cfg["checkpoint_every"]))
    log_every = max(1, int(train_cfg["log_every"]))
    note = ""
    with (
        open(out_dir / LOG_NAME, "a") as log,
        StageProgress("training", total_steps, unit="steps", enabled=progress, completed=start_step) as bar,
    ):
        for step in range(start_step, total_steps):
            generator = _step_generator(train_cfg["seed"], step)
            trainer.set_learning_rate(learning_rate(config_dict, step, total_steps))
            batch = draw_batch(clips, int(train_cfg["batch_size"]), train_cfg["pairs"], generator)
            values = trainer.step(batch, generator)
            if not math.isfinite(values["total"]):
                raise UserError(
                    f"{out_dir}: loss became {values['total']} at step {step + 1}; lower the "
                    "learning rate in the config or resume from the last checkpoint"
                )
            done = step + 1
            if done % log_every == 0 or done == total_steps:
                log.write(json.dumps({"step": done, **{k: round(v, 6) for k, v in values.items()}}) + "\n")
                log.flush()
                note = f"loss {values['total']:.4f}"
            if done % every == 0 or done == total_steps:
                save_checkpoint(
                    checkpoint_path,
                    trainer.payload(done, training_subjects, values, training_persons, provenance),
                )
            bar.advance(note=note)
    return TrainResult(
        checkpoint=checkpoint_path,
        steps=max(start_step, total_steps),
        seconds=time.monotonic() - started,
        training_subjects=training_subjects,
        losses=values,
        config_name=str(config_dict.get("name", "custom")),
        training_persons=training_persons,
    )
