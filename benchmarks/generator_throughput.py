"""Throughput of FP-FOMM clip inference: batched (what `generate` runs) vs the seed's own loop.

The reference is the published FP-FOMM animation loop: the target's keypoints once, the onset's once, then per
driving frame its keypoints and one generator call (which encodes the target again). The batched path runs the
clip in chunks and encodes the target once per clip ("fresh target"), or not at all when the same target comes
again ("target reused", what a plan that gives one worker one target's pairings gets). All paths use the same
weights and give the same frames (checked). Also reports the FLOPs per frame of each path, so the best
speed-up FLOPs allow is visible, and the achieved FLOP/s beside a plain convolution microbenchmark on the same
machine.

    python benchmarks/generator_throughput.py [--checkpoint RUN/checkpoint.pt | --config paper-256]
        [--frames 48] [--threads 2] [--channels-last] [--device cuda [--amp]]
        [--save-clip c.npz | --clip c.npz]

`--save-clip` keeps the prepared real clip so a machine without dlib (a lent GPU box) can `--clip` it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data
from torch.utils.flop_counter import FlopCounterMode

from augmenter.crops import crop_and_resize, square_crop
from augmenter.face import get_face_backend
from augmenter.face.prior import au_points_normalized
from augmenter.generators.base import PreparedClip, TargetFace
from augmenter.generators.fpfomm import FPFOMMGenerator, keypoint_tracks, load_fpfomm, tps_landmarks
from augmenter.generators.motion import frames_to_tensor
from augmenter.model.config import load_config
from augmenter.model.keypoint_detector import keypoint_values
from augmenter.model.networks import Networks


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
def save_clip(path: Path, clip: PreparedClip) -> None:
    np.savez(path, frames=clip.frames, landmarks=clip.landmarks, apex_index=clip.apex_index)


def load_clip(path: Path, size: int, frames: int) -> tuple[PreparedClip, TargetFace]:
    """A clip saved by --save-clip, resized to the model size (landmarks scaled with it)."""
    with np.load(path) as saved:
        video, landmarks = saved["frames"][:frames], saved["landmarks"][:frames]
    if len(video) < frames:
        raise SystemExit(f"{path}: holds {len(video)} frames, fewer than --frames {frames}")
    scale = size / video.shape[1]
    video = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in video])
    clip = PreparedClip("bench/1/astronaut", video, (landmarks * scale).astype(np.float32), frames // 2)
    return clip, TargetFace("bench/target", "bench/1", clip.frames[0], clip.landmarks[0])


@torch.inference_mode()
def seed_loop(model: FPFOMMGenerator, clip: PreparedClip, target: TargetFace) -> np.ndarray:
    """The seed's animation loop: target and onset keypoints once, then per frame the driving keypoints and a
    generator call that encodes the target again."""
    device, size = model.device, model.size
    kp_detector, generator = model.networks.kp_detector, model.networks.generator
    tracks = au_points_normalized(keypoint_tracks(clip, model.config), size).to(device)
    driving_points = keypoint_values(model.driving_keypoints(clip, target).to(device), size, model.compat)
    target_image = frames_to_tensor(target.image[None], device)
    target_points = au_points_normalized(target.landmarks, size).to(device)[None]
    kp_target = kp_detector(target_image, target_points)
    onset = kp_detector(frames_to_tensor(clip.frames[:1], device), tracks[:1])
    onset_inverse = torch.linalg.inv(onset["jacobian"].float())
    landmarks = model.driving_landmarks(clip, target)  # the landmark TPS motion's input, if the config has it
    if landmarks is not None:
        kp_target["landmarks"] = tps_landmarks(target.landmarks, size).to(device)[None]
    frames = []
    for t in range(len(clip.frames)):
        jacobian = kp_detector(frames_to_tensor(clip.frames[t : t + 1], device), tracks[t : t + 1])[
            "jacobian"
        ]
        kp_driving = {
            "value": driving_points[t : t + 1],
            "jacobian": jacobian.float() @ onset_inverse @ kp_target["jacobian"].float(),
        }
        if landmarks is not None:
            kp_driving["landmarks"] = landmarks[t : t + 1].to(device)
        frame = generator(target_image, kp_driving, kp_target)["prediction"]
        frames.append(
            frame.float().clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
        )
    return np.stack(frames)


def fresh(model: FPFOMMGenerator, clip: PreparedClip, target: TargetFace) -> np.ndarray:
    """The batched path for a target not seen before (its encoder features computed in the call)."""
    model._target_cache = None
    return model.animate(clip, target)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up (allocator, oneDNN / cuDNN kernel choice)
    times = []
    for _ in range(repeats):
        _synchronize()
        started = time.perf_counter()
        run()
        _synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def conv_flops_per_second(device: torch.device, repeats: int, amp: bool) -> float:
    """A large 3×3 convolution: what this machine's convolution kernels reach in the best case."""
    # 16×64 channels saturate a CPU; a GPU needs far more work per call (at that size an H200 reached only
    # ~50 TFLOP/s, below what the 256² model itself achieved).
    batch, channels = (64, 256) if device.type == "cuda" else (16, 64)
    x = torch.rand(batch, channels, 64, 64, device=device)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device)
    flops = 2 * batch * channels * channels * 64 * 64 * 9
    with (
        torch.inference_mode(),
        torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp),
    ):
        return flops / best_time(lambda: conv(x), repeats)


def flops(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="FP-FOMM checkpoint (default: --config, random weights)"
    )
    parser.add_argument("--config", default="tiny-64", help="config of the random-weight model")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--chunk", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument(
        "--channels-last", action="store_true", help="networks in channels_last memory format"
    )
    parser.add_argument("--clip", type=Path, default=None, help="a clip saved by --save-clip (no dlib)")
    parser.add_argument("--save-clip", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.checkpoint is not None:
        model = load_fpfomm(args.checkpoint, device, amp=args.amp)
    else:
        config = load_config(args.config)
        torch.manual_seed(0)
        model = FPFOMMGenerator(
            Networks(config, discriminator=False), config, "random", (), device, amp=args.amp
        )
    if args.channels_last:
        model.networks.to(memory_format=torch.channels_last)
    model.chunk_size = args.chunk
    if args.clip is not None:
        clip, target = load_clip(args.clip, model.size, args.frames)
    else:
        clip, target = real_clip(model.size, args.frames)
    if args.save_clip is not None:
        save_clip(args.save_clip, clip)
    batched = fresh(model, clip, target)
    looped = seed_loop(model, clip, target)
    difference = int(np.abs(batched.astype(int) - looped.astype(int)).max())
    if model.amp:
        model.amp = False
        full = fresh(model, clip, target).astype(int)
        model.amp = True
        error = np.abs(batched.astype(int) - full)
        print(f"bfloat16 vs float32 frames: max pixel difference {error.max()}, mean {error.mean():.3f}")
    fresh_s = best_time(lambda: fresh(model, clip, target), args.repeats)
    reused_s = best_time(lambda: model.animate(clip, target), args.repeats)
    loop_s = best_time(lambda: seed_loop(model, clip, target), args.repeats)
    flops_fresh = flops(lambda: fresh(model, clip, target))
    flops_loop = flops(lambda: seed_loop(model, clip, target))
    peak = conv_flops_per_second(device, args.repeats, model.amp)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), amp {model.amp}, threads {torch.get_num_threads()}, size {model.size}, "
        f"compat {model.compat}, channels_last {args.channels_last}, frames {args.frames}, "
        f"chunk {args.chunk}, "
        f"max pixel difference batched vs seed loop {difference}"
    )
    frames = args.frames
    print(
        f"seed loop: {frames / loop_s:.2f} frames/s; batched, fresh target: {frames / fresh_s:.2f} frames/s; "
        f"batched, target reused: {frames / reused_s:.2f} frames/s"
    )
    print(
        f"speed-up vs the seed loop: fresh target {loop_s / fresh_s:.2f}x, "
        f"target reused {loop_s / reused_s:.2f}x; "
        f"FLOPs allow {flops_loop / flops_fresh:.2f}x (seed loop {flops_loop / frames / 1e9:.3f}, batched "
        f"{flops_fresh / frames / 1e9:.3f} GFLOP/frame)"
    )
    for label, total, seconds in (("seed loop", flops_loop, loop_s), ("batched", flops_fresh, fresh_s)):
        print(
            f"{label}: {total / seconds / 1e9:.2f} GFLOP/s = {100 * total / seconds / peak:.0f}% of the conv "
            f"microbenchmark ({peak / 1e9:.2f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
