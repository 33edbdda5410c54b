"""Any video, decoded once into a memory-mapped uint8 cache at the training size, with its cuts.

    video = cached_video("mycam.mp4", (128, 128))   # decodes on first use, then just maps
    frames = video.frames()                          # uint8 (N, 128, 128, 3) RGB, a memmap
    video.cuts                                       # frame indices that start a new shot

Frames are centre-cropped to the size's aspect ratio and area-resized exactly as the runtime does
(``stae_deploy.runtime.frames.center_crop_resize``), then stored as RGB uint8, so an hour of 720p
footage costs 49 KB per frame at 128x128 on disk and almost nothing in RAM: the decoder streams
frames to the file, and training reads crops through the memory map. The cache key is the file's
sha256 and the size, so a rerun (or another run on the same file) does not decode again, and an
edited file is decoded afresh. Torch-free.
"""
from __future__ import annotations

import glob
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from stae_deploy.runtime.errors import FootageError
from stae_deploy.runtime.files import partial_path, sha256_file
from stae_deploy.runtime.frames import center_crop_resize
from stae_deploy.stae_ref.footage import cache_dir

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm", ".ogv",
                  ".wmv", ".flv", ".ts", ".3gp")
CACHE_SUBDIR = "decoded"
CACHE_FORMAT = 1
# Scene cuts, on 32x32 grey thumbnails (0..255): frame t starts a new shot when its mean absolute
# difference to frame t-1 exceeds CUT_MIN_DIFF and CUT_RATIO times the median difference of the
# CUT_WINDOW frames on either side (a pan's steady change is not a cut; a jump out of it is).
# Repeated frames (difference below REPEAT_DIFF) do not count towards that median. Checked on
# every registered clip: bikes' five cuts and city's one are found, and no other clip has one
# except four splices of the 1906 film.
CUT_THUMBNAIL = 32
CUT_MIN_DIFF = 20.0
CUT_RATIO = 3.0
CUT_WINDOW = 8
REPEAT_DIFF = 0.5


@dataclass(frozen=True)
class CachedVideo:
    """One decoded video in the cache: the source file and its sha256, the frame size (H, W),
    frame count, frames per second (0 if the file does not say), the cuts (indices of frames
    that start a new shot) and the uint8 frame file."""

    source: str
    sha256: str
    frame_size: tuple[int, int]
    frame_count: int
    fps: float
    cuts: tuple[int, ...]
    frames_file: str

    def frames(self) -> np.ndarray:
        """The frames as a read-only memory map: uint8 (N, H, W, 3) RGB."""
        height, width = self.frame_size
        return np.memmap(self.frames_file, np.uint8, "r",
                         shape=(self.frame_count, height, width, 3))

    def shots(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """The cut-free ranges ``[a, b)`` that partition ``[start, stop)``."""
        stop = self.frame_count if stop is None else stop
        edges = [start, *[c for c in self.cuts if start < c < stop], stop]
        return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "frame_size": list(self.frame_size), "cuts": list(self.cuts),
                "format": CACHE_FORMAT}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CachedVideo":
        return cls(source=data["source"], sha256=data["sha256"],
                   frame_size=tuple(data["frame_size"]), frame_count=data["frame_count"],
                   fps=data["fps"], cuts=tuple(data["cuts"]), frames_file=data["frames_file"])


def expand_video_paths(patterns: Sequence[str]) -> list[Path]:
    """Files, directories (their video files, by suffix, sorted) and glob patterns -> files.

    Raises :class:`FootageError` naming a pattern that matches nothing or a directory without
    videos; a path is never silently dropped."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise FootageError(f"video {pattern}: no such file, folder or glob match")
        for match in map(Path, matches):
            if match.is_dir():
                found = sorted(p for p in match.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
                if not found:
                    raise FootageError(f"video folder {match}: holds no video file "
                                       f"({', '.join(VIDEO_SUFFIXES)})")
                files.extend(found)
            else:
                files.append(match)
    return files


def cached_video(path: str | Path, frame_size: tuple[int, int], cache: str | Path | None = None,
                 on_progress: Callable[[int], None] | None = None) -> CachedVideo:
    """``path`` decoded at ``frame_size`` (H, W), from the cache if it is there.

    The cache lives in ``<footage cache>/decoded`` (``$STAE_DATA_DIR``). ``on_progress(frames)``
    is called as a first decode goes. Raises :class:`FootageError` naming the file if it cannot
    be read or holds no frame."""
    path = Path(path)
    if not path.is_file():
        raise FootageError(f"video {path}: no such file")
    digest = sha256_file(path)
    folder = cache_dir(cache) / CACHE_SUBDIR
    stem = f"{digest[:20]}_{frame_size[0]}x{frame_size[1]}"
    index_path = folder / f"{stem}.json"
    if index_path.exists():
        video = CachedVideo.from_dict(json.loads(index_path.read_text()))
        if Path(video.frames_file).exists() and Path(video.frames_file).stat().st_size == \
                video.frame_count * frame_size[0] * frame_size[1] * 3:
            return video
    folder.mkdir(parents=True, exist_ok=True)
    frames_path = folder / f"{stem}.u8"
    partial = partial_path(frames_path)
    count, differences = 0, []
    previous: np.ndarray | None = None
    with open(partial, "wb") as handle:
        fps = 0.0
        for frame_rgb, fps in _decode(path, frame_size):
            handle.write(frame_rgb.tobytes())
            thumb = cv2.resize(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY),
                               (CUT_THUMBNAIL, CUT_THUMBNAIL), interpolation=cv2.INTER_AREA)
            thumb = thumb.astype(np.float32)
            if previous is not None:
                differences.append(float(np.abs(thumb - previous).mean()))
            previous, count = thumb, count + 1
            if on_progress is not None and count % 100 == 0:
                on_progress(count)
    if count == 0:
        partial.unlink()
        raise FootageError(f"video {path}: decodes to no frame (empty or not a video)")
    partial.replace(frames_path)
    video = CachedVideo(source=str(path.resolve()), sha256=digest, frame_size=tuple(frame_size),
                        frame_count=count, fps=round(fps, 3),
                        cuts=tuple(scene_cuts(np.asarray(differences))),
                        frames_file=str(frames_path))
    index_partial = partial_path(index_path)
    index_partial.write_text(json.dumps(video.to_dict(), indent=2))
    index_partial.replace(index_path)
    return video


def scene_cuts(differences: np.ndarray) -> list[int]:
    """Frame indices that start a new shot, from ``differences[t]`` = the mean absolute
    difference (0..255) between thumbnails of frames t+1 and t (see the module constants)."""
    cuts = []
    for t, value in enumerate(differences):
        around = np.concatenate([differences[max(0, t - CUT_WINDOW):t],
                                 differences[t + 1:t + 1 + CUT_WINDOW]])
        around = around[around >= REPEAT_DIFF]
        typical = float(np.median(around)) if around.size else 0.0
        if value > CUT_MIN_DIFF and value > CUT_RATIO * typical:
            cuts.append(t + 1)
    return cuts


def _decode(path: Path, frame_size: tuple[int, int]) -> Iterator[tuple[np.ndarray, float]]:
    """Frames of ``path`` as RGB uint8 (H, W, 3) at ``frame_size``, with the file's fps."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FootageError(f"video {path}: OpenCV cannot open it (unsupported format or codec, "
                           f"or not a video)")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            if frame_bgr.ndim == 2:
                frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
            resized = center_crop_resize(frame_bgr, frame_size)
            yield cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), fps
    finally:
        capture.release()


def cache_size_bytes(cache: str | Path | None = None) -> int:
    """Bytes the decoded-frame cache takes on disk."""
    folder = cache_dir(cache) / CACHE_SUBDIR
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0

