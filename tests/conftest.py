"""Session fixtures shared by every test module: a small real demo corpus, its manifest, the dlib backend."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from augmenter.demo.corpus import DemoCorpus, make_demo_corpus
from augmenter.face.dlib_backend import DlibFaceBackend

# Small enough to build in a few seconds on 2 cores, big enough for LOSO:
# 6 subjects, every class for every subject.
DEMO_SETTINGS = {"subjects": 6, "clips_per_subject": 3, "size": 64, "seed": 0, "frames": (16, 24)}


@pytest.fixture(scope="session")
def dlib_backend() -> DlibFaceBackend:
    """The real dlib backend, loaded once (model loading costs about a second)."""
    from augmenter.face import get_face_backend

    backend = get_face_backend("dlib")
    assert isinstance(backend, DlibFaceBackend)
    return backend


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    """A real demo corpus in the CASME II layout: 6 subjects × 3 clips at 64², 16–24 frames each."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo-corpus"), **DEMO_SETTINGS)


@pytest.fixture(scope="session")
def demo_manifest(demo_corpus: DemoCorpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest CSV, dataset root) of the demo corpus, built by the real CASME II reader (frames checked)."""
    from augmenter.datasets import build_manifest
    from augmenter.manifest import write_manifest

    build = build_manifest("casme2", demo_corpus.annotations, demo_corpus.root, check_frames=True)
    assert not build.problems, build.problems
    path = write_manifest(build.frame, tmp_path_factory.mktemp("demo-manifest") / "demo_casme2.csv")
    return path, demo_corpus.root


# The smallest FP-FOMM the tests train and save (8-channel hourglasses, 2 blocks, tracked keypoints).
SMALL_CONFIG = {
    "model": {
        "kp_detector": {
            "block_expansion": 8,
            "max_features": 32,
            "num_blocks": 2,
            "scale_factor": 0.5,
            "head_kernel": 3,
        },
        "dense_motion": {
            "head_kernel": 3,
            "block_expansion": 8,
            "max_features": 32,
            "num_blocks": 2,
            "scale_factor": 0.5,
            "background": False,
        },
        "generator": {
            "block_expansion": 8,
            "max_features": 32,
            "num_bottleneck_blocks": 1,
            "output": "blend",
        },
        "discriminator": {"block_expansion": 8, "max_features": 32, "num_blocks": 3},
    },
    "train": {"tracked_keypoints": True},
}


@pytest.fixture
def small_config() -> dict:
    """A fresh copy of SMALL_CONFIG (tests may edit it)."""
    return copy.deepcopy(SMALL_CONFIG)
