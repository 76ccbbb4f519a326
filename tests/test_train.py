"""Training: a tiny model learns a known synthetic micro-motion; runs resume after SIGKILL; folds stay out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from augmenter.crops import crop_and_resize, square_crop
from augmenter.devices import resolve_device
from augmenter.errors import UserError
from augmenter.generators.base import PreparedClip
from augmenter.manifest import read_manifest, with_persons, write_manifest
from augmenter.model.checkpoint import load_checkpoint, save_checkpoint
from augmenter.model.config import merge_config
from augmenter.model.grid import coordinate_grid, resize_grid
from augmenter.train import Trainer, _step_generator, clip_tensors, draw_batch, train

REPO = Path(__file__).resolve().parents[1]
AMPLITUDE_PX = 2.0


def synthetic_clip(dlib_backend, frames: int = 9) -> tuple[PreparedClip, np.ndarray]:
    """A real face whose mouth region moves up by up to AMPLITUDE_PX (a smooth local field), real
    landmarks moved by the same field; returns the clip and the (S, S) weight of the motion (1 = full
    amplitude)."""
    image = data.astronaut()
    box = dlib_backend.detect(image)
    crop = square_crop(box)
    face = crop_and_resize(image, crop, 64)
    landmarks = crop.to_crop(dlib_backend.landmarks(image, box), 64)
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)
    centre = landmarks[[48, 54]].mean(0)
    sigma = 8.0
    weight = np.exp(-((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)
    point_weight = np.exp(-((landmarks - centre) ** 2).sum(-1) / (2 * sigma**2))
    video, tracks = [], []
    for t in range(frames):
        amplitude = AMPLITUDE_PX * np.sin(np.pi * t / (frames - 1))
        # content moves up by amplitude·weight: frame(z) = face(z + amplitude·weight ŷ)
        video.append(
            cv2.remap(
                face,
                cols,
                (rows + amplitude * weight).astype(np.float32),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
        )
        moved = landmarks.copy()
        moved[:, 1] -= amplitude * point_weight
        tracks.append(moved)
    return PreparedClip(
        "synthetic/1/mouth-up", np.stack(video), np.stack(tracks).astype(np.float32), frames // 2
    ), weight


def test_tiny_model_lowers_its_loss_and_moves_pixels_the_right_way(
    dlib_backend, tmp_path, small_config
) -> None:
    torch.manual_seed(0)
    config = merge_config(
        {
            "model": small_config["model"],
            "train": {
                "batch_size": 4,
                "pairs": "onset",
                "tracked_keypoints": True,
                "teacher_flow": 20.0,
                "lr": 1e-3,
                "track_sigma_frames": 0.0,
            },
        }
    )
    clip, weight = synthetic_clip(dlib_backend)
    tensors = clip_tensors(clip, config, tmp_path / "cache")
    assert tensors.teacher is not None and float(tensors.teacher[4, 1][weight > 0.5].mean()) > 0.5
    trainer = Trainer(config, torch.device("cpu"))
    totals = []
    started = time.monotonic()
    for step in range(30):
        generator = _step_generator(0, step)
        totals.append(trainer.step(draw_batch([tensors], 4, "onset", generator), generator)["total"])
    assert time.monotonic() - started < 240  # ~30 s on an idle 2-core machine
    assert np.mean(totals[-5:]) < 0.7 * np.mean(totals[:5])
    trainer.networks.eval()
    with torch.no_grad():
        source, apex = tensors.frames[:1].float() / 255, tensors.frames[4:5].float() / 255
        kp_source = trainer.networks.kp_detector(source, tensors.points[:1])
        kp_apex = trainer.networks.kp_detector(apex, tensors.points[4:5])
        out = trainer.networks.generator(source, kp_apex, kp_source)
    sampling = resize_grid(out["deformation"], 64, 64)[0] - coordinate_grid(64, 64)
    displacement_px = sampling * 31.5  # where each apex pixel is taken from in the source
    moving = torch.from_numpy(weight > 0.5)
    true_dy = AMPLITUDE_PX * float(weight[weight > 0.5].mean())  # taken from below: +dy
    learned = displacement_px[moving].mean(0)
    assert float(learned[1]) > 0.25 * true_dy  # the right direction, a real fraction of the size
    assert abs(float(learned[0])) < 0.5 * float(learned[1])
    region_error = (out["prediction"] - apex).abs().mean(1)[0][moving]
    copy_error = (source - apex).abs().mean(1)[0][moving]
    assert float(region_error.mean()) < float(copy_error.mean())  # closer to the apex than doing nothing


TEST_CONFIG = """
name = "test-tiny"
[model.kp_detector]
block_expansion = 8
max_features = 32
num_blocks = 2
scale_factor = 0.5
head_kernel = 3
[model.dense_motion]
head_kernel = 3
block_expansion = 8
max_features = 32
num_blocks = 2
scale_factor = 0.5
background = false
[model.generator]
block_expansion = 8
max_features = 32
num_bottleneck_blocks = 1
output = "blend"
[model.discriminator]
block_expansion = 8
max_features = 32
num_blocks = 3
[train]
batch_size = 2
steps = 8
checkpoint_every = 2
log_every = 1
pairs = "onset"
tracked_keypoints = true
teacher_flow = 20.0
gan = 1.0
"""


def test_kill_and_resume_reaches_the_same_step_count(demo_manifest, tmp_path) -> None:
    manifest, root = demo_manifest
    config = tmp_path / "test-tiny.toml"
    config.write_text(TEST_CONFIG)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "cli",
        "train",
        "--manifest",
        str(manifest),
        "--root",
        str(root),
        "--config",
        str(config),
        "--out",
        str(out),
        "--steps",
        "8",
        "--device",
        "cpu",
        "--exclude-subjects",
        "5,casme2/6",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUGMENTER_PROGRESS_INTERVAL": "0"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    checkpoint = out / "checkpoint.pt"
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.is_file() and (out / "checkpoint.pt.sha256").is_file():
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1].decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(checkpoint)[0]["step"]
    assert 2 <= killed_at < 8
    # Without --resume the run folder is protected.
    refused = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run(command + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    payload, digest = load_checkpoint(checkpoint)
    assert payload["step"] == 8 and len(digest) == 64
    assert "casme2/5" not in payload["training_subjects"] and "casme2/6" not in payload["training_subjects"]
    assert "casme2/1" in payload["training_subjects"]
    assert {"gan", "feature_matching", "discriminator", "teacher"} <= set(payload["losses"])
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1] == 8 and set(range(1, 9)) <= set(steps)
    assert "resuming" in resumed.stderr and "replaces the perceptual loss" in resumed.stderr
    # Progress reaches a log file as plain lines; the resumed run found every clip prepared.
    assert "training: 8/8 steps (100 %)" in resumed.stderr
    assert "preparing clips: 12 of 12 clips found in" in resumed.stderr


def test_training_refuses_to_run_on_nothing(demo_manifest, tmp_path) -> None:
    manifest, root = demo_manifest
    subjects = [str(s) for s in range(1, 7)]
    with pytest.raises(UserError, match="no clips left"):
        train(manifest, root, "tiny-64", tmp_path / "run", steps=1, exclude_subjects=subjects, progress=False)
    with pytest.raises(UserError, match="no such config"):
        train(manifest, root, "tiny-65", tmp_path / "run", steps=1, progress=False)


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preparation cache for this module's runs: the first prepares the clips, the others reuse them."""
    return tmp_path_factory.mktemp("train-cache")


def _one_person_for_two_subjects(demo_manifest, tmp_path: Path) -> Path:
    """The demo manifest with subjects 1 and 2 declared one person ("p1"), e.g. a participant filmed twice."""
    manifest, _ = demo_manifest
    frame = with_persons(read_manifest(manifest), {"casme2/1": "p1", "casme2/2": "p1"})
    return write_manifest(frame, tmp_path / "persons.csv")


def test_checkpoint_records_persons_and_excludes_by_person(
    demo_manifest, tmp_path, train_cache, capsys
) -> None:
    _, root = demo_manifest
    manifest = _one_person_for_two_subjects(demo_manifest, tmp_path)
    config = tmp_path / "test-tiny.toml"
    config.write_text(TEST_CONFIG)
    common = {"steps": 1, "cache_dir": train_cache, "progress": False, "device": "cpu"}
    by_person = train(manifest, root, config, tmp_path / "a", exclude_persons=["p1"], **common)
    payload = load_checkpoint(by_person.checkpoint)[0]
    assert payload["training_persons"] == ["casme2/3", "casme2/4", "casme2/5", "casme2/6"]
    assert payload["training_subjects"] == ["casme2/3", "casme2/4", "casme2/5", "casme2/6"]
    assert by_person.training_persons == tuple(payload["training_persons"])
    # Excluding one of a person's two subjects keeps the person in training: recorded, and said aloud.
    by_subject = train(manifest, root, config, tmp_path / "b", exclude_subjects=["1"], **common)
    assert "p1" in by_subject.training_persons and "casme2/1" not in by_subject.training_subjects
    assert "persons p1 still train" in capsys.readouterr().err
    with pytest.raises(UserError, match="--exclude-persons casme2/9: no such person"):
        train(manifest, root, config, tmp_path / "c", exclude_persons=["casme2/9"], **common)


def test_fine_tuning_records_what_the_initial_weights_saw(demo_manifest, tmp_path, train_cache) -> None:
    manifest, root = demo_manifest
    config = tmp_path / "frozen.toml"
    config.write_text(
        TEST_CONFIG.replace("[train]\n", "[train]\nlr = 0.0\n")
    )  # steps leave weights as they are
    common = {"steps": 1, "cache_dir": train_cache, "progress": False, "device": "cpu"}
    first = train(manifest, root, config, tmp_path / "first", exclude_subjects=["1", "2"], **common)
    start = load_checkpoint(first.checkpoint)[0]
    # Weights that record nobody (an import without --trained-on) are refused: their provenance is unknown.
    unknown = {**start, "training_subjects": [], "training_persons": []}
    save_checkpoint(tmp_path / "unknown.pt", unknown)
    with pytest.raises(UserError, match="unknown provenance.*--trained-on"):
        train(manifest, root, config, tmp_path / "refused", init=tmp_path / "unknown.pt", **common)
    with pytest.raises(UserError, match="--trained-on .* --init"):
        train(manifest, root, config, tmp_path / "refused", trained_on=["voxceleb"], **common)
    tuned = train(
        manifest,
        root,
        config,
        tmp_path / "tuned",
        exclude_subjects=["3", "4", "5", "6"],
        init=first.checkpoint,
        trained_on=["voxceleb"],
        **common,
    )
    payload = load_checkpoint(tuned.checkpoint)[0]
    own = ["casme2/1", "casme2/2"]
    inherited = ["casme2/3", "casme2/4", "casme2/5", "casme2/6"]
    assert payload["training_subjects"] == own + inherited
    assert payload["training_persons"] == own + inherited + ["voxceleb"]
    assert payload["provenance"]["init_sha256"] == load_checkpoint(first.checkpoint)[1]
    for name in ("kp_detector", "generator"):  # it started from those weights (lr 0 kept them)
        learned = [k for k in start[name] if "running_" not in k and "num_batches" not in k]
        assert learned and all(torch.equal(start[name][k], payload[name][k]) for k in learned)


def test_a_cuda_device_without_cuda_is_one_line() -> None:
    if torch.version.cuda is None:
        with pytest.raises(UserError, match=r"cuda:0: this torch .* CPU-only build; install a CUDA build"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(UserError, match=r"cuda:99: only \d+ GPU"):
            resolve_device("cuda:99")
    with pytest.raises(UserError, match="not a torch device name"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")
