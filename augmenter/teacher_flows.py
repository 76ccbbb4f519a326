"""Teacher flows: the dense optical flow from every frame of a prepared clip to its onset, cached.

They are the teacher signal of FP-FOMM training (train.teacher_flow); computing them is most of a training
run's preparation, so they are kept in the preparation cache beside the clips.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from augmenter.cache import atomic_save_npy, cache_file, record_lookup
from augmenter.flow import FlowMethod, optical_flow
from augmenter.generators.base import PreparedClip


def _flows_file(clip: PreparedClip, method: str, cache: Path) -> Path:
    dataset, _, rest = clip.key.partition("/")
    settings = {"frames": hashlib.sha256(clip.frames.tobytes()).hexdigest(), "method": method}
    return cache_file(cache, dataset, "flows-" + rest, settings, ".npy")


def cached_flows(clip: PreparedClip, method: str, cache: Path) -> np.ndarray | None:
    """The clip's flows to onset from `cache`, or None when absent, damaged or misshapen (uncounted)."""
    try:
        flows = np.load(_flows_file(clip, method, cache), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return flows if flows.shape == clip.frames.shape[:3] + (2,) else None


def flows_to_onset(clip: PreparedClip, method: FlowMethod, cache_dir: str | Path | None = None) -> np.ndarray:
    """float32 (T, S, S, 2): the flow from every frame to the onset (driving → source; frame 0 is zero), the
    teacher signal of FP-FOMM training. Cached by the frames' bytes and the method (TV-L1 costs ~70 ms a
    frame at 64²: it is most of a training run's preparation)."""
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        flows = cached_flows(clip, method, cache)
        if flows is not None:
            record_lookup(cache, "flows", "hit")
            return flows
    onset = clip.frames[0]
    flows = np.stack(
        [np.zeros(onset.shape[:2] + (2,), np.float32)]
        + [optical_flow(frame, onset, method) for frame in clip.frames[1:]]
    )
    if cache is not None:
        atomic_save_npy(_flows_file(clip, method, cache), flows)
        record_lookup(cache, "flows", "miss")
    return flows
