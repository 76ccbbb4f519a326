"""Checkpoints: atomic writes with a sha256 sidecar, weights-only loading, FOMM / FP-FOMM state-dict import.

A checkpoint is a dict of tensors and plain values (config, step, training subjects) saved by ``torch.save``;
it is read with ``weights_only=True`` only, so a file that would run code when unpickled is refused. The
networks sit under FOMM's top-level keys (kp_detector, generator, discriminator), so official FOMM / FP-FOMM
checkpoints go through the same importer.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augmenter.errors import UserError

CHECKPOINT_FORMAT = "augmenter-fpfomm"
NETWORK_KEYS: tuple[str, ...] = ("kp_detector", "generator", "discriminator")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _atomic_write_bytes(path: Path, write: Any) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> str:
    """Write `payload` atomically (temp + rename), then its sha256 sidecar; returns the sha256.

    A kill between the two renames leaves a checkpoint whose sidecar is stale: loading recomputes the hash and
    rewrites nothing, it only refuses a mismatch when the sidecar is newer than the checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda stream: torch.save(payload, stream))
    digest = file_sha256(path)
    _atomic_write_bytes(sidecar_path(path), lambda stream: stream.write(f"{digest}  {path.name}\n".encode()))
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """(payload, sha256). Refuses (UserError) missing files, corrupt files and pickles that would run code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train one with `augmenter train` or check the path")
    digest = file_sha256(path)
    sidecar = sidecar_path(path)
    if sidecar.is_file() and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        recorded = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        if recorded and recorded != digest:
            raise UserError(
                f"{path}: sha256 {digest[:12]}… differs from {sidecar.name} ({recorded[:12]}…); "
                "the file is damaged, restore it or retrain"
            )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused, the file holds Python objects that would run code when loaded "
            "(only weights-only checkpoints are accepted); re-save its state dicts with torch.save"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {str(exc)[:80]}); "
            "restore it or retrain"
        ) from exc
    if not isinstance(payload, dict):
        raise UserError(f"{path}: checkpoint holds a {type(payload).__name__}, not a dict of state dicts")
    return payload, digest


@dataclass
class ImportReport:
    """What an import of foreign weights matched, per network."""

    matched: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(
        default_factory=dict
    )  # ours, absent or of another shape in the file
    unexpected: dict[str, list[str]] = field(default_factory=dict)  # the file's, with no home here
    shape_mismatch: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for name in self.matched:
            parts.append(
                f"{name}: {len(self.matched[name])} matched, {len(self.missing[name])} missing, "
                f"{len(self.unexpected[name])} unexpected ({len(self.shape_mismatch[name])} shape mismatches)"
            )
        return "; ".join(parts)


def import_state(networks: nn.Module, state: dict[str, Any]) -> ImportReport:
    """Copy every tensor of `state[network]` whose key and shape match ours; report the rest.

    Works for FOMM / FP-FOMM checkpoints (keys kp_detector, generator, discriminator) and for ours.
    """
    report = ImportReport()
    for name in NETWORK_KEYS:
        module = getattr(networks, name)
        own = module.state_dict()
        theirs = state.get(name) or {}
        usable = {k: v for k, v in theirs.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        report.matched[name] = sorted(usable)
        report.shape_mismatch[name] = sorted(k for k in theirs if k in own and k not in usable)
        report.missing[name] = sorted(k for k in own if k not in usable)
        report.unexpected[name] = sorted(k for k in theirs if k not in own)
        if usable:
            module.load_state_dict(usable, strict=False)
    return report


# The networks inference needs; a foreign file must fill them completely.
INFERENCE_NETWORKS: tuple[str, ...] = ("kp_detector", "generator")
# Bookkeeping buffers older torch versions did not write; their absence changes nothing computed.
_OPTIONAL_SUFFIXES: tuple[str, ...] = ("num_batches_tracked",)


def _block_count(state: dict[str, Any], prefix: str) -> int:
    indices = {key[len(prefix) :].split(".", 1)[0] for key in state if key.startswith(prefix)}
    return len({int(i) for i in indices if i.isdigit()})


def _scale_from_blur(state: dict[str, Any], key: str) -> float:
    """The anti-alias scale whose Gaussian kernel (size 2·round(4σ) + 1, σ = (1/scale − 1)/2) the file
    holds."""
    if key not in state:
        return 1.0
    size = int(state[key].shape[-1])
    for power in range(1, 6):
        scale = 0.5**power
        if 2 * round(2 * (1 / scale - 1)) + 1 == size:
            return scale
    raise UserError(f"{key}: a {size}×{size} anti-alias kernel matches no scale 1/2…1/32; not a FOMM file")


def _hourglass(state: dict[str, Any], prefix: str) -> tuple[int, int, int, int]:
    """(in_features, block_expansion, num_blocks, max_features) of an hourglass from its encoder weights."""
    first = state[f"{prefix}encoder.down_blocks.0.conv.weight"]
    blocks = _block_count(state, f"{prefix}encoder.down_blocks.")
    widest = max(int(state[f"{prefix}encoder.down_blocks.{i}.conv.weight"].shape[0]) for i in range(blocks))
    return int(first.shape[1]), int(first.shape[0]) // 2, blocks, widest


def layout_from_state(state: dict[str, Any], source: str = "file") -> dict[str, Any]:
    """The `model` config table whose networks have exactly the shapes of a FOMM / FP-FOMM state dict.

    FOMM files carry no config, so the layout is read off the tensors: keypoint count and head size from the
    `kp` head, prior channel from the detector's input width, widths and depths from the hourglasses,
    anti-alias scales from the blur kernels, background motion from the dense-motion input width.
    """
    try:
        kp, gen = state["kp_detector"], state["generator"]
        num_kp, _, head, _ = (int(n) for n in kp["kp.weight"].shape)
        kp_in, kp_expansion, kp_blocks, kp_max = _hourglass(kp, "predictor.")
        channels = int(gen["first.conv.weight"].shape[1])
        dm_in, dm_expansion, dm_blocks, dm_max = _hourglass(gen, "dense_motion_network.hourglass.")
        motions = dm_in // (channels + 1)
        down = _block_count(gen, "down_blocks.")
        gen_expansion = int(gen["first.conv.weight"].shape[0])
        gen_max = max(
            [gen_expansion] + [int(gen[f"down_blocks.{i}.conv.weight"].shape[0]) for i in range(down)]
        )
        model: dict[str, Any] = {
            "num_kp": num_kp,
            "num_channels": channels,
            "kp_detector": {
                "keypoints": "learned" if kp_in == channels else "prior",
                "block_expansion": kp_expansion,
                "max_features": kp_max,
                "num_blocks": kp_blocks,
                "scale_factor": _scale_from_blur(kp, "down.weight"),
                "head_kernel": head,
            },
            "dense_motion": {
                "block_expansion": dm_expansion,
                "max_features": dm_max,
                "num_blocks": dm_blocks,
                "scale_factor": _scale_from_blur(gen, "dense_motion_network.down.weight"),
                "background": motions == num_kp + 1,
                "estimate_occlusion_map": "dense_motion_network.occlusion.weight" in gen,
                "head_kernel": int(gen["dense_motion_network.mask.weight"].shape[-1]),
            },
            "generator": {
                "block_expansion": gen_expansion,
                "max_features": gen_max,
                "num_down_blocks": down,
                "num_bottleneck_blocks": _block_count(gen, "bottleneck.r"),
                "output": "decoder",
            },
        }
    except (KeyError, ValueError, AttributeError) as exc:
        raise UserError(
            f"{source}: not a FOMM / FP-FOMM state dict (no {exc} where the layout should be); "
            "give the .pth.tar file their training wrote"
        ) from exc
    disc = state.get("discriminator") or {}
    scales = sorted({key.split(".")[1] for key in disc if key.startswith("discs.")})
    if scales:
        prefix = f"discs.{scales[0]}."
        spectral = f"{prefix}down_blocks.0.conv.weight_orig" in disc
        weight = "weight_orig" if spectral else "weight"
        blocks = _block_count(disc, f"{prefix}down_blocks.")
        widths = [int(disc[f"{prefix}down_blocks.{i}.conv.{weight}"].shape[0]) for i in range(blocks)]
        model["discriminator"] = {
            "scales": [float(s.replace("-", ".")) if "-" in s else int(s) for s in scales],
            "block_expansion": widths[0] // 2,
            "max_features": max(widths),
            "num_blocks": blocks,
            "spectral": spectral,
        }
    return model


def config_from_state(
    state: dict[str, Any], size: int = 256, compat: str = "fomm", source: str = "file"
) -> dict[str, Any]:
    """A full config for a foreign state dict: its layout, the given numerics, and the seed's inference
    settings (keypoints of the onset frame, no teacher flow)."""
    from augmenter.model.config import merge_config

    model = layout_from_state(state, source)
    model.update(size=int(size), compat=compat)
    if compat == "fomm":
        for part in ("kp_detector", "dense_motion"):
            # FOMM's downsampling takes every k-th pixel, then each hourglass block halves without rounding.
            step = round(1 / model[part]["scale_factor"]) * 2 ** model[part]["num_blocks"]
            if size % step:
                raise UserError(
                    f"{source}: size {size} does not fit this layout ({part} needs a multiple of {step} px); "
                    "use --size 256 for the published weights"
                )
    config = merge_config(
        {"model": model, "train": {"pairs": "random", "tracked_keypoints": False, "teacher_flow": 0.0}},
        source,
    )
    config["name"] = f"imported-{Path(source).name}"
    return config


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _meta_networks(config: dict[str, Any]) -> nn.Module:
    from augmenter.model.networks import Networks

    with torch.device("meta"):  # shapes only: nothing is allocated
        return Networks(config, discriminator=False)


def fitting_configs(state: dict[str, Any]) -> list[str]:
    """Named configs whose kp_detector and generator have exactly the file's tensor shapes."""
    from augmenter.model.config import CONFIG_NAMES, load_config

    fits = []
    for name in CONFIG_NAMES:
        networks = _meta_networks(load_config(name))
        if all(
            _shapes(getattr(networks, part))
            == {k: tuple(v.shape) for k, v in (state.get(part) or {}).items()}
            for part in INFERENCE_NETWORKS
        ):
            fits.append(name)
    return fits


def _misfit_hint(state: dict[str, Any], source: str) -> str:
    fits = fitting_configs(state)
    if fits:
        return f"the file fits config {' / '.join(fits)}"
    try:
        layout = layout_from_state(state, source)
    except UserError:
        return "the file is not a FOMM / FP-FOMM layout"
    kp, dm = layout["kp_detector"], layout["dense_motion"]
    return (
        f"the file fits a config with num_kp {layout['num_kp']}, keypoints {kp['keypoints']}, "
        f"kp_detector {kp['block_expansion']}/{kp['max_features']}/{kp['num_blocks']} blocks, "
        f"dense_motion {dm['block_expansion']}/{dm['max_features']}/{dm['num_blocks']} blocks "
        "(`augmenter checkpoint import` writes it)"
    )


def check_fit(
    networks: nn.Module,
    state: dict[str, Any],
    source: str,
    config_name: str = "this config",
    parts: tuple[str, ...] = NETWORK_KEYS,
) -> None:
    """Refuse (one line) any tensor of `state` with no home of its shape in `networks`, and any weight of
    `networks` the file leaves out, for each of `parts` (a part absent from the file is skipped unless
    inference needs it)."""
    for part in parts:
        theirs = state.get(part)
        if not theirs:
            if part in INFERENCE_NETWORKS:
                raise UserError(f"{source}: holds no {part} weights; not a FOMM / FP-FOMM checkpoint")
            continue
        own = getattr(networks, part).state_dict()
        for key, value in theirs.items():
            if key not in own or tuple(own[key].shape) != tuple(value.shape):
                expected = tuple(own[key].shape) if key in own else "nothing"
                raise UserError(
                    f"{source}: {part}.{key} is {tuple(value.shape)} in the file but {expected} in "
                    f"{config_name}; {_misfit_hint(state, source)}"
                )
        for key in own:
            if key not in theirs and not key.endswith(_OPTIONAL_SUFFIXES):
                raise UserError(
                    f"{source}: {part}.{key} is missing from the file (it would stay random in "
                    f"{config_name}); {_misfit_hint(state, source)}"
                )


def import_fomm_checkpoint(
    path: str | Path, networks: nn.Module, config_name: str = "this config"
) -> ImportReport:
    """Load an official FOMM / FP-FOMM checkpoint file into `networks`, all or nothing: a tensor whose key or
    shape has no home (or a weight the file leaves out) is refused with one line naming a config that fits."""
    payload, _ = load_checkpoint(path)
    if not any(name in payload for name in NETWORK_KEYS):
        raise UserError(
            f"{path}: no kp_detector / generator / discriminator state dicts inside; "
            "is this a FOMM checkpoint?"
        )
    check_fit(networks, payload, str(path), config_name)
    return import_state(networks, payload)


def import_checkpoint(
    path: str | Path,
    out: str | Path,
    trained_on: tuple[str, ...] = (),
    compat: str = "fomm",
    size: int = 256,
) -> tuple[str, dict[str, Any]]:
    """A FOMM / FP-FOMM file → an augmenter checkpoint (layout read off the file, numerics `compat`).

    `trained_on` are the persons the weights saw, recorded as the checkpoint's training persons; without it
    nothing is recorded, which the leakage guard reads as unknown. Returns (sha256, config).
    """
    payload, digest = load_checkpoint(path)
    if "config" in payload:
        raise UserError(f"{path}: already an augmenter checkpoint (it carries its config); use it as it is")
    config = config_from_state(payload, size=size, compat=compat, source=str(path))
    from augmenter.model.networks import Networks

    networks = Networks(config)
    import_fomm_checkpoint(path, networks, config["name"])
    written = save_checkpoint(
        out,
        {
            "format": CHECKPOINT_FORMAT,
            "step": 0,
            "config": config,
            "training_subjects": [],
            "training_persons": list(trained_on),
            "imported_from": {"file": Path(path).name, "sha256": digest},
            **{name: getattr(networks, name).state_dict() for name in NETWORK_KEYS},
        },
    )
    return written, config


def export_checkpoint(path: str | Path, out: str | Path) -> list[str]:
    """An augmenter checkpoint → FOMM's file layout (kp_detector / generator / discriminator state dicts and
    an epoch), loadable by their `load_checkpoints`. Returns notes on what their code will compute
    differently."""
    payload, _ = load_checkpoint(path)
    if "config" not in payload or "generator" not in payload:
        raise UserError(f"{path}: not an augmenter checkpoint (no config/generator); nothing to export")
    from augmenter.model.config import model_compat

    config = payload["config"]
    if config["model"]["dense_motion"].get("landmark_tps", False):
        raise UserError(
            f"{path}: dense_motion.landmark_tps (one more motion choice) has no counterpart in FOMM's code, "
            "so their networks cannot load these weights; export a checkpoint trained without it"
        )
    notes = []
    if model_compat(config) != "fomm":
        notes.append(
            'compat is "augmenter": their code pads the keypoint heads differently, samples zeros outside '
            "the frame and scales keypoints by 2p/256, so it computes something else from these weights"
        )
    output = config["model"]["generator"].get("output", "decoder")
    if output != "decoder":
        notes.append(f'output "{output}" is not in their code: their frames are the decoder output alone')
    if config["model"]["size"] != 256 or config["model"]["kp_detector"].get("scale_factor") != 0.25:
        notes.append("the FP-FOMM seed's prior channel is hard-coded to 256² inputs at scale 0.25")
    state = {name: payload[name] for name in NETWORK_KEYS if name in payload}
    state["epoch"] = int(payload.get("step", 0))
    save_checkpoint(out, state)
    return notes
