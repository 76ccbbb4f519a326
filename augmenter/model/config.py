"""Model and training configuration: TOML files merged over defaults, kept as plain dicts.

Plain dicts (str/int/float/bool/list) travel inside a checkpoint and load with ``weights_only=True``; a config
is named (``tiny-64`` → augmenter/configs/tiny-64.toml) or given as a path.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from augmenter.errors import UserError
from augmenter.flow import FLOW_METHODS

# "fomm": the numerics of the published FOMM / FP-FOMM code (unpadded keypoint heads, zero-padded warps, the
# seed's prior channel and keypoint scaling, FOMM's anti-aliased downsampling), so their weights compute what
# they computed. "augmenter": the project's own choices (augmenter/model/README.md lists each difference). A
# config without the key (checkpoints written before it existed) is "augmenter".
COMPAT_MODES: tuple[str, ...] = ("augmenter", "fomm")
# "prior": FP-FOMM's fixed facial-prior keypoints (18 AU points, extra prior input channel); "learned": FOMM's
# keypoints, the expectation of each heatmap (no prior channel).
KEYPOINT_MODES: tuple[str, ...] = ("prior", "learned")
# Tracked keypoints from each frame's landmark fit, or the onset landmarks carried along an optical flow.
TRACK_METHODS: tuple[str, ...] = ("landmarks", *FLOW_METHODS)

DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "model": {
        "size": 64,
        "num_kp": 18,
        "num_channels": 3,
        "compat": "augmenter",
        "kp_detector": {
            "keypoints": "prior",
            "block_expansion": 32,
            "max_features": 1024,
            "num_blocks": 5,
            "temperature": 0.1,
            "scale_factor": 0.25,
            "head_kernel": 7,
        },
        "dense_motion": {
            "block_expansion": 64,
            "max_features": 1024,
            "num_blocks": 5,
            "scale_factor": 0.25,
            "kp_variance": 0.01,
            "background": True,
            "estimate_occlusion_map": True,
            "head_kernel": 7,
            # one more motion choice: the TPS through the tracked landmarks (augmenter/model/dense_motion.py)
            "landmark_tps": False,
        },
        "generator": {
            "block_expansion": 64,
            "max_features": 512,
            "num_down_blocks": 2,
            "num_bottleneck_blocks": 6,
            "output": "decoder",
            "pixel_interpolation": "bilinear",  # of the warped source pixels ("bicubic" keeps more texture)
        },
        "discriminator": {
            "scales": [1],
            "block_expansion": 32,
            "max_features": 512,
            "num_blocks": 4,
            "spectral": True,
        },
    },
    "train": {
        "batch_size": 8,
        "steps": 1000,
        "lr": 2e-4,
        "betas": [0.5, 0.999],
        "milestones": [0.6, 0.9],  # fractions of `steps` where the learning rate drops ×0.1
        "checkpoint_every": 100,
        "log_every": 10,
        "seed": 0,
        "pairs": "random",  # "random": two frames of a clip (the seed); "onset": onset → any frame
        "tracked_keypoints": False,  # driving keypoints from the driving frame's (smoothed) landmarks
        # where tracked keypoints come from: "landmarks" (each frame's own landmark fit) or a flow method
        # ("dis", "farneback", "tvl1") carrying the onset landmarks along the flow onset → frame
        "track_method": "landmarks",
        "track_sigma_frames": 2.0,
        "track_dead_band_px": 0.0,
        "teacher_flow": 0.0,  # weight of the face-masked L1 between the dense motion and TV-L1 (0 = off)
        "teacher_method": "tvl1",
        "perceptual": 10.0,
        "perceptual_scales": [1.0, 0.5, 0.25, 0.125],
        "gan": 0.0,  # LSGAN generator weight (0 = no discriminator training)
        "feature_matching": 10.0,
        "equivariance_jacobian": 10.0,
        "equivariance_sigma_affine": 0.05,
        "equivariance_sigma_tps": 0.005,
        "equivariance_points_tps": 5,
    },
}

CONFIG_NAMES: tuple[str, ...] = ("seed-64", "tiny-64", "paper-256", "fomm-vox-256")


def _merge(base: dict[str, Any], override: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise UserError(
                f"{source}: unknown config key {where}{key}; known keys: {', '.join(sorted(base))}"
            )
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise UserError(f"{source}: config key {where}{key} must be a table")
            merged[key] = _merge(base[key], value, f"{where}{key}.", source)
        else:
            merged[key] = value
    return merged


def merge_config(override: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """DEFAULTS updated by `override`; unknown keys are a UserError (a typo must not be silently ignored)."""
    config = _merge(DEFAULTS, override, "", source)
    model_compat(config, source)
    keypoint_mode(config, source)
    track_method(config, source)
    return config


def model_compat(config: dict[str, Any], source: str = "config") -> str:
    """The config's numerics, "augmenter" when the key is absent (checkpoints written before it existed)."""
    compat = config["model"].get("compat", "augmenter")
    if compat not in COMPAT_MODES:
        raise UserError(f"{source}: model.compat is {compat!r}; use one of {', '.join(COMPAT_MODES)}")
    return compat


def keypoint_mode(config: dict[str, Any], source: str = "config") -> str:
    """ "prior" (FP-FOMM, the default and what old checkpoints are) or "learned" (FOMM)."""
    mode = config["model"]["kp_detector"].get("keypoints", "prior")
    if mode not in KEYPOINT_MODES:
        raise UserError(
            f"{source}: model.kp_detector.keypoints is {mode!r}; use one of {', '.join(KEYPOINT_MODES)}"
        )
    return mode


def track_method(config: dict[str, Any], source: str = "config") -> str:
    """Where tracked keypoints come from; "landmarks" when the key is absent (older checkpoints)."""
    method = config["train"].get("track_method", "landmarks")
    if method not in TRACK_METHODS:
        raise UserError(f"{source}: train.track_method is {method!r}; use one of {', '.join(TRACK_METHODS)}")
    return method


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """A named config shipped with the package or a TOML file, merged over DEFAULTS."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name in CONFIG_NAMES:
        text = resources.files("augmenter").joinpath("configs", f"{text_name}.toml").read_text()
        source = f"augmenter/configs/{text_name}.toml"
    elif path.is_file():
        text, source = path.read_text(), str(path)
    else:
        raise UserError(
            f"{text_name}: no such config; use one of {', '.join(CONFIG_NAMES)} or a TOML file path"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML ({exc}); fix the file") from exc
    config = merge_config(data, source)
    if config["name"] == "custom":
        config["name"] = path.stem if path.is_file() else text_name
    return config
