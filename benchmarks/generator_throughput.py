"""Throughput of FP-FOMM clip inference: batched (whole clip as chunks, target encoded once) vs a
per-frame loop.

Both paths use the same networks and weights and produce the same frames (checked). Also reports the achieved
FLOP/s of the batched path beside a plain convolution microbenchmark on the same machine, i.e. how much of the
hardware the model's small convolutions can use.

    python benchmarks/generator_throughput.py [--checkpoint RUN/checkpoint.pt] [--frames 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage import data
from torch.utils.flop_counter import FlopCounterMode

from augmenter.face import get_face_backend
from augmenter.face.prior import au_points_normalized
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.generators.fpfomm import FPFOMMGenerator, frames_to_tensor, keypoint_tracks, load_fpfomm
from augmenter.model.config import load_config
from augmenter.model.networks import Networks
from augmenter.prepare import crop_and_resize, square_crop


def real_clip(size: int, frames: int) -> tuple[PreparedClip, TargetFace]:
    """A real face (skimage's astronaut) drifting by sub-pixel shifts, with real dlib landmarks per frame."""
    backend = get_face_backend("dlib")
    image = data.astronaut()
    box = backend.detect(image)
    video, tracks = [], []
    for t in range(frames):
        shift = int(round(2 * np.sin(2 * np.pi * t / frames)))
        crop = square_crop(box)
        crop = type(crop)(crop.left, crop.top + shift, crop.side)
        video.append(crop_and_resize(image, crop, size))
        tracks.append(crop.to_crop(backend.landmarks(image, box), size))
    clip = PreparedClip(
        "bench/1/astronaut", np.stack(video), np.stack(tracks).astype(np.float32), frames // 2
    )
    return clip, TargetFace("bench/target", "bench/1", clip.frames[0], clip.landmarks[0])


@torch.inference_mode()
def per_frame_loop(model: FPFOMMGenerator, clip: PreparedClip, target: TargetFace) -> np.ndarray:
    """The naive path: one frame at a time, the target re-encoded for every frame."""
    device, size = model.device, model.size
    kp_detector, generator = model.networks.kp_detector, model.networks.generator
    tracks = au_points_normalized(keypoint_tracks(clip.landmarks, model.config), size).to(device)
    driving_points = model.driving_keypoints(clip, target).to(device)
    target_image = frames_to_tensor(target.image[None], device)
    target_points = au_points_normalized(target.landmarks, size).to(device)[None]
    onset_inverse = None
    frames = []
    for t in range(len(clip.frames)):
        kp_target = kp_detector(target_image, target_points)
        jacobian = kp_detector(frames_to_tensor(clip.frames[t : t + 1], device), tracks[t : t + 1])[
            "jacobian"
        ]
        if onset_inverse is None:
            onset_inverse = torch.linalg.inv(jacobian)
        kp_driving = {
            "value": driving_points[t : t + 1],
            "jacobian": jacobian @ onset_inverse @ kp_target["jacobian"],
        }
        frame = generator(target_image, kp_driving, kp_target)["prediction"]
        frames.append(frame.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy())
    return np.stack(frames)


def best_time(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def conv_flops_per_second(device: torch.device, repeats: int) -> float:
    """A large 3×3 convolution: what this machine's convolution kernels reach in the best case."""
    x = torch.rand(16, 64, 64, 64, device=device)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    flops = 2 * 16 * 64 * 64 * 64 * 64 * 9
    with torch.inference_mode():
        return flops / best_time(lambda: conv(x), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="FP-FOMM checkpoint (default: tiny-64 random)"
    )
    parser.add_argument("--config", default="tiny-64", help="config of the random-weight model")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--chunk", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.checkpoint is not None:
        model = load_fpfomm(args.checkpoint, device)
    else:
        config = load_config(args.config)
        torch.manual_seed(0)
        model = FPFOMMGenerator(Networks(config), config, "random", (), device)
    model.chunk_size = args.chunk
    clip, target = real_clip(model.size, args.frames)
    batched = model.animate(clip, target)
    looped = per_frame_loop(model, clip, target)
    difference = int(np.abs(batched.astype(int) - looped.astype(int)).max())
    batched_s = best_time(lambda: model.animate(clip, target), args.repeats)
    loop_s = best_time(lambda: per_frame_loop(model, clip, target), args.repeats)
    with FlopCounterMode(display=False) as counter:
        model.animate(clip, target)
    achieved = counter.get_total_flops() / batched_s
    peak = conv_flops_per_second(device, args.repeats)
    print(
        f"device {device}, threads {torch.get_num_threads()}, size {model.size}, frames {args.frames}, "
        f"chunk {args.chunk}, max pixel difference batched vs loop {difference}"
    )
    print(
        f"batched: {args.frames / batched_s:.1f} frames/s; "
        f"per-frame loop: {args.frames / loop_s:.1f} frames/s"
    )
    print(f"speed-up batched / per-frame loop: {loop_s / batched_s:.1f}x")
    print(
        f"achieved {achieved / 1e9:.2f} GFLOP/s "
        f"({counter.get_total_flops() / args.frames / 1e9:.3f} GFLOP/frame) "
        f"vs conv microbenchmark {peak / 1e9:.2f} GFLOP/s ({100 * achieved / peak:.0f}%)"
    )


if __name__ == "__main__":
    main()
