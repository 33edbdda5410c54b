"""What the run shows its live view, in shared memory: the run's process writes it step by
step (a few stores, no system call, no lock), the view's process reads it when a page or a
scrape asks. See :mod:`stae_deploy.runtime.live_view`.

One block holds a header (when a viewer last asked), one record per stream
(:data:`STREAM_DTYPE`: the last step's numbers, running totals, the latency histograms, rings
of the last steps' latencies, times, gains and surprise scores, the stream's health flags and
its panel slot) and each stream's panel frames (actual and predicted, float32). The block is
made whole at the start, so a too-small ``/dev/shm`` (Docker gives 64 MB) is named then, not
found by a crash mid-run.

Consistency: each record carries a sequence number that the writer makes odd while it writes
and even after; a reader copies the record and tries again if the number was odd or moved
(a seqlock). Single-byte flags (the panel slot, reconnecting) and the header are written
outside it. The run's process is the only writer of a record; the view's process only reads,
except to free a panel slot and to say when a viewer asked.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.run_metrics import COUNTERS, LATENCY_BUCKETS_S

ROLLING_STEPS = 100          # steps behind the rolling numbers (latency, gain, fps)
SCORE_HISTORY = 300          # surprise scores kept per stream for the page's plot
ERROR_BYTES = 400            # why a stream ended, UTF-8, cut to this length

ENDED_NORMALLY, ENDED_WITH_ERROR = 1, 2    # a record's "ended"; 0 while it runs
SLOT_FREE, SLOT_FULL = 0, 1
SHARED_MEMORY_DIR = "/dev/shm"

HEADER_DTYPE = np.dtype([("viewer_at", "f8")], align=True)   # monotonic s of the last page/panel request
STREAM_DTYPE = np.dtype([
    ("seq", "u8"),
    ("step", "i8"), ("source_frame", "i8"),
    ("last_step_at", "f8"),                      # monotonic s; NaN before the first step
    ("nonfinite", "u1"), ("ended", "u1"), ("error", f"S{ERROR_BYTES}"),
    ("totals", "i8", (len(COUNTERS),)),          # in the order of run_metrics.COUNTERS
    ("surprise", "f8"),                          # NaN: no score yet
    ("latency_buckets", "i8", (len(LATENCY_BUCKETS_S) + 1,)), ("latency_sum_s", "f8"),
    ("capture_buckets", "i8", (len(LATENCY_BUCKETS_S) + 1,)), ("capture_sum_s", "f8"),
    ("steps_in_ring", "i8"), ("infer_ms", "f8", (ROLLING_STEPS,)),
    ("step_at", "f8", (ROLLING_STEPS,)),
    ("gains_in_ring", "i8"), ("gains_db", "f8", (ROLLING_STEPS,)),
    ("scores_in_ring", "i8"), ("score_frames", "i8", (SCORE_HISTORY,)),
    ("scores", "f8", (SCORE_HISTORY,)),
    # outside the seqlock: single bytes written by one side each
    ("reconnecting", "u1"), ("panel_slot", "u1"),
    ("panel_at", "f8"),
], align=True)
_BUCKET_EDGES_S = np.array(LATENCY_BUCKETS_S)


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream's record as read at one moment, in plain Python values."""

    step: int
    source_frame: int
    last_step_at: float | None
    nonfinite: bool
    ended: int
    error: str
    reconnecting: bool
    totals: dict[str, int]
    surprise: float | None
    latency_buckets: list[int]
    latency_sum_s: float
    capture_buckets: list[int]
    capture_sum_s: float
    infer_ms: list[float]              # oldest first, up to ROLLING_STEPS
    step_at: list[float]
    gains_db: list[float]
    scores: list[tuple[int, float]]    # (source frame, score), oldest first


class ViewState:
    """The shared block of ``streams`` streams of ``frame_hw`` (height, width) model frames:
    made in the run's process (``name`` None), opened by ``name`` in the view's."""

    def __init__(self, streams: int, frame_hw: tuple[int, int], name: str | None = None):
        panel_shape = (streams, 2, 3, *frame_hw)
        records = HEADER_DTYPE.itemsize + streams * STREAM_DTYPE.itemsize
        panels_offset = -(-records // 64) * 64                  # cache-line aligned
        size = panels_offset + int(np.prod(panel_shape)) * 4
        if name is None:
            _require_shared_memory(size, streams, frame_hw)
        self._block = shared_memory.SharedMemory(name, create=name is None, size=size)
        self.owner = name is None
        self.name = self._block.name
        self.header = np.ndarray((), HEADER_DTYPE, self._block.buf)
        self.streams = np.ndarray((streams,), STREAM_DTYPE, self._block.buf,
                                  offset=HEADER_DTYPE.itemsize)
        self.panels = np.ndarray(panel_shape, np.float32, self._block.buf, offset=panels_offset)
        if self.owner:
            self.streams[:] = np.zeros((), STREAM_DTYPE)
            self.streams["last_step_at"] = math.nan
            self.streams["surprise"] = math.nan
            self.header["viewer_at"] = -math.inf

    # -- the run's side --------------------------------------------------------------------------

    def record_step(self, index: int, record: dict[str, Any], totals: list[int],
                    now: float) -> None:
        """Stream ``index`` made a step at monotonic time ``now`` (s): its metrics ``record``
        (ms) and running ``totals`` (in the order of ``COUNTERS``)."""
        stream = self.streams[index]
        stream["seq"] += 1
        stream["step"], stream["source_frame"] = record["step"], record["source_frame"]
        stream["last_step_at"], stream["nonfinite"] = now, record["nonfinite"]
        stream["totals"] = totals
        infer_s, capture_s = record["infer_ms"] / 1e3, record["capture_to_prediction_ms"] / 1e3
        stream["latency_buckets"][np.searchsorted(_BUCKET_EDGES_S, infer_s)] += 1
        stream["latency_sum_s"] += infer_s
        stream["capture_buckets"][np.searchsorted(_BUCKET_EDGES_S, capture_s)] += 1
        stream["capture_sum_s"] += capture_s
        at = stream["steps_in_ring"] % ROLLING_STEPS
        stream["infer_ms"][at], stream["step_at"][at] = record["infer_ms"], now
        stream["steps_in_ring"] += 1
        if "psnr_db" in record:
            at = stream["gains_in_ring"] % ROLLING_STEPS
            stream["gains_db"][at] = record["psnr_db"] - record["copy_last_psnr_db"]
            stream["gains_in_ring"] += 1
        if record.get("surprise") is not None:
            stream["surprise"] = record["surprise"]
            at = stream["scores_in_ring"] % SCORE_HISTORY
            stream["score_frames"][at], stream["scores"][at] = (record["source_frame"],
                                                                record["surprise"])
            stream["scores_in_ring"] += 1
        stream["seq"] += 1

    def record_end(self, index: int, error: str | None) -> None:
        """Stream ``index`` ended (``error``: why, None: normally)."""
        stream = self.streams[index]
        stream["seq"] += 1
        stream["ended"] = ENDED_NORMALLY if error is None else ENDED_WITH_ERROR
        stream["error"] = (error or "").encode()[:ERROR_BYTES]
        stream["seq"] += 1

    # -- the view's side -------------------------------------------------------------------------

    def snapshot(self, index: int) -> StreamSnapshot:
        """Stream ``index``'s record, consistent (see the module's docstring)."""
        stream = self.streams[index]
        while True:
            seq = int(stream["seq"])
            copy = stream.copy()
            if seq % 2 == 0 and int(stream["seq"]) == seq:
                break
        return StreamSnapshot(
            step=int(copy["step"]), source_frame=int(copy["source_frame"]),
            last_step_at=None if math.isnan(copy["last_step_at"]) else float(
                copy["last_step_at"]),
            nonfinite=bool(copy["nonfinite"]), ended=int(copy["ended"]),
            error=bytes(copy["error"]).decode(errors="replace"),
            reconnecting=bool(copy["reconnecting"]),
            totals=dict(zip(COUNTERS, (int(total) for total in copy["totals"]))),
            surprise=None if math.isnan(copy["surprise"]) else float(copy["surprise"]),
            latency_buckets=[int(n) for n in copy["latency_buckets"]],
            latency_sum_s=float(copy["latency_sum_s"]),
            capture_buckets=[int(n) for n in copy["capture_buckets"]],
            capture_sum_s=float(copy["capture_sum_s"]),
            infer_ms=_ring(copy["infer_ms"], int(copy["steps_in_ring"])),
            step_at=_ring(copy["step_at"], int(copy["steps_in_ring"])),
            gains_db=_ring(copy["gains_db"], int(copy["gains_in_ring"])),
            scores=list(zip((int(f) for f in _ring(copy["score_frames"],
                                                   int(copy["scores_in_ring"]))),
                            _ring(copy["scores"], int(copy["scores_in_ring"])))))

    def take_panel(self, index: int) -> np.ndarray | None:
        """A copy of stream ``index``'s waiting panel frames ``(2, 3, H, W)``, freeing its slot;
        None when none waits."""
        stream = self.streams[index]
        if stream["panel_slot"] != SLOT_FULL:
            return None
        frames = self.panels[index].copy()
        stream["panel_slot"] = SLOT_FREE
        return frames

    def close(self) -> None:
        """Let go of the block (and remove it, in the run's process)."""
        del self.header, self.streams, self.panels
        self._block.close()
        if self.owner:
            self._block.unlink()


def _require_shared_memory(size: int, streams: int, frame_hw: tuple[int, int]) -> None:
    """Raise ConfigError when ``/dev/shm`` has less than ``size`` bytes free."""
    if not os.path.isdir(SHARED_MEMORY_DIR):
        return                                  # not Linux: the OS sizes it
    stats = os.statvfs(SHARED_MEMORY_DIR)
    free = stats.f_bavail * stats.f_frsize
    if free < size:
        raise ConfigError(
            f"--serve: the live view needs {size / 2**20:.1f} MB of shared memory for {streams} "
            f"stream(s) of {frame_hw[0]}x{frame_hw[1]} frames, and {SHARED_MEMORY_DIR} has "
            f"{free / 2**20:.1f} MB free; give it more (docker run --shm-size=256m) or serve "
            f"fewer streams")


def _ring(values: np.ndarray, written: int) -> list[float]:
    """The ring ``values``' entries, oldest first, after ``written`` writes."""
    size = len(values)
    if written <= size:
        return values[:written].tolist()
    start = written % size
    return np.concatenate([values[start:], values[:start]]).tolist()
