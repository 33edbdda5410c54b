"""Writing what people look at: labelled side-by-side panels and video files (OpenCV)."""
from __future__ import annotations

from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from stae_deploy.runtime.errors import StaeError
from stae_deploy.runtime.files import partial_path

LABEL_HEIGHT_PX = 22


def side_by_side(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Concatenate labelled BGR uint8 (H, W, 3) panels horizontally, each with a caption bar."""
    labelled = []
    for label, image in panels:
        bar = np.zeros((LABEL_HEIGHT_PX, image.shape[1], 3), np.uint8)
        cv2.putText(bar, label, (4, LABEL_HEIGHT_PX - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        labelled.append(np.vstack([bar, image]))
    return np.hstack(labelled)


class VideoFileWriter:
    """An MPEG-4 (``mp4v``) video file written frame by frame; a context manager.

    OpenCV's pip wheels cannot write H.264; ``mp4v`` in ``.mp4`` plays in browsers and players.

    Frames go to a sibling partial file (``out.mp4`` -> ``out.mp4.partial.mp4``: the real
    extension stays last because OpenCV picks the container from it) that is renamed to the final
    path only by :meth:`close`, after OpenCV has finished the file. A process killed mid-write
    leaves only the partial name, never a file that looks complete. Leaving the ``with`` block on
    an error calls :meth:`abort` instead: the frames so far are kept, finished, under the partial
    name. Ctrl-C (``KeyboardInterrupt``) is the normal way to stop recording a camera, so it
    closes normally.
    """

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.partial_path = partial_path(self.path, keep_suffix=True)
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one BGR uint8 (H, W, 3) frame; the first frame fixes the video size."""
        if self._writer is None:
            height, width = frame_bgr.shape[:2]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.partial_path),
                                           cv2.VideoWriter.fourcc(*"mp4v"), self.fps,
                                           (width, height))
            if not self._writer.isOpened():
                self._writer = None
                raise StaeError(f"video {self.path}: OpenCV cannot open it for writing (mp4v)")
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and give it its final name (nothing is written if no frame was)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if not self.partial_path.is_file() or self.partial_path.stat().st_size == 0:
            raise StaeError(f"video {self.path}: OpenCV wrote nothing to {self.partial_path} "
                            f"(disk full, or the directory was removed?)")
        self.partial_path.replace(self.path)

    def abort(self) -> None:
        """Finish what was written but keep it under :attr:`partial_path` (an interrupted run)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "VideoFileWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()
