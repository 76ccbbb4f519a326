"""Checkpoints: atomic + sha256, weights-only loading (code-running pickles refused), the FP-FOMM
ClipGenerator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from augmenter.errors import UserError
from augmenter.generators import load_generator
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.model.checkpoint import file_sha256, load_checkpoint, save_checkpoint, sidecar_path
from augmenter.model.config import merge_config
from augmenter.model.networks import Networks
from augmenter.train import Trainer


class _RunsCode:
    """Unpickling this would create a file: the loader must refuse it before that happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (Path.touch, (self.marker,))


def test_save_writes_file_and_sha256_sidecar_and_loads_back(tmp_path) -> None:
    path = tmp_path / "run" / "checkpoint.pt"
    digest = save_checkpoint(path, {"step": 3, "weights": torch.arange(4.0), "config": {"name": "x"}})
    assert digest == file_sha256(path)
    assert sidecar_path(path).read_text().split()[0] == digest
    payload, loaded_digest = load_checkpoint(path)
    assert payload["step"] == 3 and torch.equal(payload["weights"], torch.arange(4.0))
    assert loaded_digest == digest
    assert not list(path.parent.glob("*.tmp"))  # no temp file left behind


def test_pickle_that_would_run_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"generator": _RunsCode(marker)}, path)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        load_generator(path)
    assert not marker.exists()


def test_damaged_checkpoint_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(100)})
    sidecar = sidecar_path(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    sidecar.touch()  # sidecar written after the damage: the mismatch is a damaged file
    with pytest.raises(UserError, match="damaged|not a readable"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_fpfomm_is_a_clip_generator_with_provenance(
    tmp_path, demo_manifest, dlib_backend, small_config
) -> None:
    from augmenter.manifest import read_manifest
    from augmenter.prepare import prepare_clip

    config = merge_config(small_config)
    trainer = Trainer(config, torch.device("cpu"))
    path = tmp_path / "checkpoint.pt"
    digest = save_checkpoint(path, trainer.payload(5, ["casme2/1", "casme2/2"], {"total": 1.0}))
    generator = load_generator(path)
    assert generator.kind == "fp-fomm" and generator.checksum == digest
    assert generator.training_subjects == ("casme2/1", "casme2/2") and generator.size == 64
    manifest_path, root = demo_manifest
    row = read_manifest(manifest_path).iloc[0]
    clip = prepare_clip(row, root, 64, dlib_backend)
    target = TargetFace("t", "casme2/9", clip.frames[0], clip.landmarks[0])
    video = generator.animate(clip, target)
    assert video.shape == clip.frames.shape and video.dtype == np.uint8
    # Frame 0 is the target itself moved by nothing: the blend output keeps most of its pixels.
    assert float(np.abs(video[0].astype(float) - clip.frames[0]).mean()) < 20
    wrong = PreparedClip(clip.key, clip.frames[:, :32, :32], clip.landmarks, clip.apex_index)
    with pytest.raises(UserError, match="size"):
        generator.animate(wrong, target)


def test_networks_of_a_checkpoint_equal_the_trained_ones(tmp_path, small_config) -> None:
    config = merge_config(small_config)
    trainer = Trainer(config, torch.device("cpu"))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, trainer.payload(1, [], {}))
    loaded = Networks(load_checkpoint(path)[0]["config"])
    loaded.generator.load_state_dict(load_checkpoint(path)[0]["generator"])
    assert torch.equal(loaded.generator.final.weight, trainer.networks.generator.final.weight)


def test_fpfomm_generator_reads_training_persons_and_is_not_training_free(tmp_path, small_config) -> None:
    trainer = Trainer(merge_config(small_config), torch.device("cpu"))
    payload = {k: v for k, v in trainer.payload(1, ["casme2/1"], {}).items() if k != "training_persons"}
    old = tmp_path / "old.pt"
    save_checkpoint(old, payload)  # written before checkpoints recorded persons: unknown
    generator = load_generator(old)
    assert generator.training_persons == () and generator.training_free is False
    new = tmp_path / "new.pt"
    save_checkpoint(new, {**payload, "training_persons": ["casme2/1", "samm/006"]})
    assert load_generator(new).training_persons == ("casme2/1", "samm/006")
