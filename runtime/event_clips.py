"""``stae run --event-clips DIR``: a short video around each surprise event.

Each event of stream i at source frame n becomes ``DIR/stream{i}_frame{n}.mp4`` (the stream and
``source_frame`` of its line in ``--events``): the actual | predicted | error heat-map panels of
``frames_before`` steps before the event, the event's own step and ``frames_after`` steps after
it (fewer when the stream ends first). The run keeps only the last ``frames_before + 1`` steps'
frames per stream (a copy of the actual and predicted model frames, composed into panels only
when a clip is written). Clips are written under a partial name and renamed when complete, like
the run's other videos.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stae_deploy.runtime.errors import ConfigError, OutputExistsError
from stae_deploy.runtime.media import VideoFileWriter
from stae_deploy.runtime.streaming import PanelFrames, RunSummary, compose_panel

CLIP_PATTERN = "stream*_frame*.mp4"


@dataclass(frozen=True)
class EventClipSettings:
    """directory: where the clips go. frames_before, frames_after: steps around the event
    (>= 0). fps: the clips' frame rate. force: overwrite clips already in ``directory``
    (otherwise a folder that holds any is refused before the run)."""

    directory: Path
    frames_before: int = 8
    frames_after: int = 8
    fps: float = 10.0
    force: bool = False

    def __post_init__(self) -> None:
        if self.frames_before < 0 or self.frames_after < 0:
            raise ConfigError(f"frames_before/frames_after (--event-clip-frames): expected >= 0, "
                              f"got {self.frames_before}, {self.frames_after}")
        if not self.fps > 0:
            raise ConfigError(f"fps: expected > 0, got {self.fps}")

    def refuse_existing(self) -> None:
        """Raise OutputExistsError if ``directory`` already holds clips (unless ``force``)."""
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"--event-clips {self.directory}: not a folder")
        found = sorted(self.directory.glob(CLIP_PATTERN)) if self.directory.is_dir() else []
        if found and not self.force:
            raise OutputExistsError(
                f"--event-clips {self.directory}: already holds {len(found)} event clip(s) "
                f"({found[0].name}, ...); pass --force to overwrite, or choose another folder")


@dataclass
class _OpenClip:
    writer: VideoFileWriter
    frames_left: int


@dataclass
class _Stream:
    recent: deque[PanelFrames]
    open_clips: list[_OpenClip] = field(default_factory=list)


class EventClipWriter:
    """A ``StepObserver`` writing one clip per surprise event; :meth:`close` finishes the clips
    still open. ``clips``: the paths written so far."""

    def __init__(self, settings: EventClipSettings, streams: int):
        settings.refuse_existing()
        self.settings = settings
        self.clips: list[Path] = []
        self._streams = [_Stream(deque(maxlen=settings.frames_before + 1))
                         for _ in range(streams)]

    def wants_panel(self, index: int) -> bool:
        return True                     # every step's frames: the next event may need them

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                frames: PanelFrames | None) -> None:
        """Keep the step's frames; start a clip at an event; feed and finish the open clips."""
        stream = self._streams[index]
        if frames is None:              # the stream's first step, or after a reset
            return
        kept = PanelFrames(frames.actual.copy(), frames.predicted.copy())
        stream.recent.append(kept)
        for clip in stream.open_clips:
            clip.writer.write(compose_panel(kept))
            clip.frames_left -= 1
        if record.get("surprise_event"):
            path = self.settings.directory / f"stream{index}_frame{record['source_frame']}.mp4"
            clip = _OpenClip(VideoFileWriter(path, self.settings.fps), self.settings.frames_after)
            for before in stream.recent:
                clip.writer.write(compose_panel(before))
            stream.open_clips.append(clip)
        self._finish(stream, [c for c in stream.open_clips if c.frames_left <= 0])

    def on_end(self, index: int, summary: RunSummary) -> None:
        stream = self._streams[index]
        self._finish(stream, stream.open_clips)

    def close(self) -> None:
        """Finish every clip still open (a run stopped mid-clip keeps what it has)."""
        for stream in self._streams:
            self._finish(stream, stream.open_clips)

    def _finish(self, stream: _Stream, clips: list[_OpenClip]) -> None:
        """Close ``clips`` of ``stream`` (they get their final names) and forget them."""
        for clip in list(clips):
            clip.writer.close()
            stream.open_clips.remove(clip)
            self.clips.append(clip.writer.path)
