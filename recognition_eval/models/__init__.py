"""The recognizers and their fixed schedules (configs/recognizers.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from augmenter.errors import UserError
from recognition_eval.models.offapexnet import OffApexNet
from recognition_eval.models.resnet import ResNet18
from recognition_eval.models.ststnet import STSTNet

RECOGNIZERS: tuple[str, ...] = ("resnet", "ststnet", "offapexnet")
FEATURE_PLANES: tuple[str, ...] = ("u", "v", "strain")
CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "recognizers.toml"


@dataclass(frozen=True)
class RecognizerSpec:
    """Everything a LOSO fold needs to build and train one recognizer the same way every time."""

    name: str
    channels: tuple[str, ...]
    input_size: int
    epochs: int
    lr: float
    batch: int
    weight_decay: float = 0.0
    width: int = 16

    @property
    def channel_indices(self) -> list[int]:
        return [FEATURE_PLANES.index(c) for c in self.channels]


def recognizer_spec(name: str, config_path: str | Path | None = None, **overrides: object) -> RecognizerSpec:
    """The schedule of `name` from the TOML config; keyword overrides (epochs=5) replace single fields."""
    if name not in RECOGNIZERS:
        raise UserError(f"unknown recognizer {name!r}; choose one of {', '.join(RECOGNIZERS)}")
    path = Path(config_path) if config_path is not None else CONFIG_PATH
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: cannot read the recognizer config ({exc}); fix or remove it") from exc
    if name not in config:
        raise UserError(f"{path}: no [{name}] section; add one with channels, input_size, epochs, lr, batch")
    section = dict(config[name])
    section["channels"] = tuple(section.get("channels", FEATURE_PLANES))
    unknown = [c for c in section["channels"] if c not in FEATURE_PLANES]
    if unknown:
        raise UserError(f"{path}: [{name}] channels {unknown} unknown; use {list(FEATURE_PLANES)}")
    try:
        spec = RecognizerSpec(name=name, **section)
    except TypeError as exc:
        raise UserError(f"{path}: [{name}] has an unknown or missing key ({exc})") from exc
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(spec, **clean) if clean else spec


def build_recognizer(spec: RecognizerSpec, n_classes: int) -> nn.Module:
    """A freshly initialised network for `spec` (seed torch before calling for reproducible weights)."""
    in_channels = len(spec.channels)
    if spec.name == "resnet":
        return ResNet18(
            in_channels=in_channels, n_classes=n_classes, width=spec.width, small_input=spec.input_size <= 32
        )
    if spec.name == "ststnet":
        return STSTNet(in_channels=in_channels, n_classes=n_classes, input_size=spec.input_size)
    if spec.name == "offapexnet":
        return OffApexNet(in_channels=in_channels, n_classes=n_classes, input_size=spec.input_size)
    raise UserError(f"unknown recognizer {spec.name!r}; choose one of {', '.join(RECOGNIZERS)}")


__all__ = ["RECOGNIZERS", "FEATURE_PLANES", "RecognizerSpec", "recognizer_spec", "build_recognizer"]
