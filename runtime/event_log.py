"""``stae run --events events.jsonl``: every stream's surprise events as JSON lines.

One line per event: ``{"stream": i, "source": uri, "source_frame": n, "step": k,
"time": "2026-12-04T03:40:00.123Z", "score": 7.31}`` (time: UTC, when the frame was scored).
Written under a partial name and renamed when the run ends, like the run's other files
(:class:`stae_deploy.runtime.streaming.JsonLinesWriter`).
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Sequence

from stae_deploy.runtime.streaming import JsonLinesWriter, PanelFrames, RunSummary


class SurpriseEventLog:
    """A ``StepObserver`` that writes each surprise event; :meth:`close` gives the file its
    final name."""

    def __init__(self, path: Path, sources: Sequence[str]):
        self.sources = list(sources)
        self.writer = JsonLinesWriter(path)
        self.events = 0

    def wants_panel(self, index: int) -> bool:
        return False

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                frames: PanelFrames | None) -> None:
        if not record.get("surprise_event"):
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        self.writer.write({"stream": index, "source": self.sources[index],
                           "source_frame": record["source_frame"], "step": record["step"],
                           "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                           "score": record["surprise"]})
        self.events += 1

    def on_end(self, index: int, summary: RunSummary) -> None:
        return

    def close(self, completed: bool = True) -> None:
        """Final name when ``completed``; otherwise keep what was written under the partial
        name."""
        self.writer.close() if completed else self.writer.abort()
