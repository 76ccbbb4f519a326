"""The landmark TPS motion choice of the dense motion network, and keypoints tracked by optical flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import AMPLITUDE_PX, synthetic_clip

from augmenter.errors import UserError
from augmenter.generators.base import TargetFace
from augmenter.generators.fpfomm import load_fpfomm, tps_landmarks
from augmenter.model.checkpoint import export_checkpoint, save_checkpoint
from augmenter.model.config import merge_config
from augmenter.model.dense_motion import LANDMARK_TPS_INITIAL_SHARE
from augmenter.model.grid import (
    coordinate_grid,
    normalized_to_pixels,
    pixels_to_normalized,
    resize_grid,
    tps_sampling_grid,
)
from augmenter.train import Trainer, clip_tensors
from augmenter.warp import border_points, tps_displacement_fields


def landmark_tps_config(small_config: dict, track_method: str = "landmarks") -> dict:
    small_config["model"]["dense_motion"]["landmark_tps"] = True
    small_config["train"].update({"track_method": track_method, "track_sigma_frames": 0.0})
    return merge_config(small_config)


def test_the_torch_spline_is_the_warp_modules_spline(dlib_backend) -> None:
    clip, _ = synthetic_clip(dlib_backend)
    size = clip.frames.shape[1]
    control = np.concatenate([clip.landmarks[0, :60], border_points((size, size), 4)]).astype(np.float64)
    moves = np.zeros_like(control)
    moves[:60] = clip.landmarks[4, :60] - clip.landmarks[0, :60]
    expected = tps_displacement_fields(control, moves, (size, size))  # (H, W, 2) displacement at each pixel
    grid = tps_sampling_grid(
        pixels_to_normalized(torch.from_numpy(control)[None], size),
        pixels_to_normalized(torch.from_numpy(control + moves)[None], size),
        size,
        size,
        regularization=0.0,
    )
    pixels = np.stack(np.meshgrid(np.arange(size), np.arange(size)), axis=-1)
    spline = normalized_to_pixels(grid[0], size).numpy() - pixels
    assert np.abs(expected).max() > 0.5 * AMPLITUDE_PX
    assert np.abs(spline - expected).max() < 1e-3


def test_an_untrained_landmark_tps_network_starts_on_the_spline(dlib_backend, small_config) -> None:
    config = landmark_tps_config(small_config)
    clip, weight = synthetic_clip(dlib_backend)
    tensors = clip_tensors(clip, config, None)
    assert tensors.landmarks is not None and tensors.landmarks.shape == (9, 60, 2)
    torch.manual_seed(0)
    networks = Trainer(config, torch.device("cpu")).networks.eval()
    dense_motion = networks.generator.dense_motion_network
    with torch.no_grad():
        source, apex = tensors.frames[:1].float() / 255, tensors.frames[4:5].float() / 255
        kp_source = networks.kp_detector(source, tensors.points[:1])
        kp_apex = networks.kp_detector(apex, tensors.points[4:5])
        kp_source["landmarks"], kp_apex["landmarks"] = tensors.landmarks[:1], tensors.landmarks[4:5]
        motion = dense_motion(source, kp_apex, kp_source)
        # the untrained mask's head gives the TPS choice most of every pixel (its bias alone gives the
        # initial share; the random weights add noise); index 0: no background choice in this config
        share = motion["mask"][:, 0]
        assert LANDMARK_TPS_INITIAL_SHARE - 0.1 < float(share.mean()) <= LANDMARK_TPS_INITIAL_SHARE
        assert float(share.min()) > 0.5
        without = dict(kp_apex)
        del without["landmarks"]
        with pytest.raises(ValueError, match="landmarks"):
            dense_motion(source, without, kp_source)
    reads_from = (resize_grid(motion["deformation"], 64, 64)[0] - coordinate_grid(64, 64)) * 31.5
    moving = torch.from_numpy(weight > 0.5)
    true_dy = AMPLITUDE_PX * float(weight[weight > 0.5].mean())  # apex pixels read from below: +dy
    learned = reads_from[moving].mean(0)
    assert 0.6 * true_dy < float(learned[1]) < 1.2 * true_dy
    assert abs(float(learned[0])) < 0.2 * true_dy


def test_flow_tracked_keypoints_follow_the_skin(dlib_backend, small_config) -> None:
    clip, weight = synthetic_clip(dlib_backend)
    config = landmark_tps_config(small_config, "dis")
    tracks = tps_landmarks(torch.from_numpy(clip.landmarks), 64)
    flow_tracks = clip_tensors(clip, config, None).landmarks
    assert flow_tracks is not None
    # The clip's landmarks were moved by the true field: the flow tracks agree with them at the apex.
    moved = (tracks[4] - tracks[0]).norm(dim=-1) > 0.5 * 2 / 63 * AMPLITUDE_PX
    assert int(moved.sum()) >= 5
    error_px = ((flow_tracks[4] - tracks[4]).norm(dim=-1) * 31.5)[moved]
    assert float(error_px.mean()) < 0.3 * AMPLITUDE_PX
    with pytest.raises(UserError, match="track_method"):
        merge_config({"train": {"track_method": "sift"}})


def test_a_landmark_tps_checkpoint_animates_a_face(dlib_backend, small_config, tmp_path) -> None:
    config = landmark_tps_config(small_config, "dis")
    torch.manual_seed(0)
    trainer = Trainer(config, torch.device("cpu"))
    path = tmp_path / "gen.pt"
    save_checkpoint(path, trainer.payload(1, ["demo/1"], {}))
    generator = load_fpfomm(path)
    clip, weight = synthetic_clip(dlib_backend)
    target = TargetFace("self", "1", clip.frames[0], clip.landmarks[0])
    video = generator.animate(clip, target).astype(np.float32)
    moving = weight > 0.5
    apex_error = np.abs(video[4] - clip.frames[4]).mean(-1)[moving].mean()
    copy_error = np.abs(clip.frames[0].astype(np.float32) - clip.frames[4]).mean(-1)[moving].mean()
    assert apex_error < 0.8 * copy_error  # untrained, it already moves like the source


def test_export_to_fomms_layout_refuses_the_landmark_tps_choice(small_config, tmp_path) -> None:
    trainer = Trainer(landmark_tps_config(small_config), torch.device("cpu"))
    path = tmp_path / "gen.pt"
    save_checkpoint(path, trainer.payload(1, ["demo/1"], {}))
    with pytest.raises(UserError, match="landmark_tps"):
        export_checkpoint(path, tmp_path / "gen.pth.tar")
    assert not (tmp_path / "gen.pth.tar").exists()
