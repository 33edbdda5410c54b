"""Surprise events against ground truth nobody wrote here: precision, recall and delay.

    python -m stae_deploy.benchmarks.surprise_events MODEL.onnx [--threshold 6]
        [--json F] [--markdown F] [--plot F] [--force]

The model streams each clip exactly as ``stae run`` would (``run_streams``, repeated frames
held), and every surprise event it raises at the given threshold is compared with known events:

* bikes.mp4: its scene cuts (frames 30, 76, 137, 187, 242);
* city: its cut at frame 116;
* vtest (OpenCV's static pedestrian camera) with an object pasted in for a few frames, twice
  (``pasted_object_clip``: exact ground truth, the frames it is present);
* and clips with no event, for the false-event rate per 1000 frames: vtest as it is, carphone,
  balle, classroom and racecar1906 (motion.mov is left out: OpenCV reports more frames than
  it can read, which the runtime treats as a truncated file).

An event that starts within an event's window (its first frame to ``TOLERANCE_FRAMES`` after
its last) detects it, with a delay of (event frame - first frame); further events in the same
window are counted as repeats, not as false events; any other event is false. Precision = true
events / all events (repeats excluded), recall = detected / known events. Nothing here was tuned
on these clips: the threshold is the documented default unless ``--threshold`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.machine import machine_info
from stae_deploy.runtime.plots import save_figure
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import PanelFrames, RunOptions, RunSummary, run_streams
from stae_deploy.runtime.surprise import SurpriseSettings
from stae_deploy.stae_ref.footage import fetch

TOLERANCE_FRAMES = 5
CUTS = {"bikes": (30, 76, 137, 187, 242), "city": (116,)}
QUIET_CLIPS = ("vtest", "carphone", "balle", "classroom", "racecar1906")
PASTED = ((200, 206), (500, 506))      # [first, end) frames of vtest with the pasted object
PASTED_CLIP = "vtest+object"


def pasted_object_clip(folder: Path) -> Path:
    """vtest with a real photo (scikit-image's coffee cup) pasted in during :data:`PASTED`:
    a lossless-enough MJPG AVI at the clip's size and frame rate."""
    from skimage import data

    source = cv2.VideoCapture(str(fetch("vtest")))
    fps = source.get(cv2.CAP_PROP_FPS) or 10.0
    ok, frame = source.read()
    height, width = frame.shape[:2]
    cup = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    cup = cv2.resize(cup, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
    path = folder / "vtest_object.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    index = 0
    while ok:
        for number, (first, end) in enumerate(PASTED):
            if first <= index < end:          # top left, then bottom right
                y = 20 if number == 0 else height - cup.shape[0] - 20
                x = 20 if number == 0 else width - cup.shape[1] - 20
                frame[y:y + cup.shape[0], x:x + cup.shape[1]] = cup
        writer.write(frame)
        ok, frame = source.read()
        index += 1
    writer.release()
    source.release()
    return path


class _Scores:
    """A ``StepObserver`` keeping each scored frame's score and the events' frames."""

    def __init__(self) -> None:
        self.scores: list[tuple[int, float]] = []
        self.events: list[int] = []
        self.frames = 0

    def wants_panel(self, index: int) -> bool:
        return False

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                frames: PanelFrames | None) -> None:
        self.frames += 1
        if record.get("surprise") is not None:
            self.scores.append((record["source_frame"], record["surprise"]))
        if record.get("surprise_event"):
            self.events.append(record["source_frame"])

    def on_end(self, index: int, summary: RunSummary) -> None:
        return


def stream_clip(predictor: Predictor, path: Path, settings: SurpriseSettings) -> _Scores:
    """Run ``path`` through ``predictor`` like ``stae run``; its scores and events."""
    scores = _Scores()
    with FrameGrabber(SourceConfig(str(path)), log=lambda _: None) as grabber:
        [summary], _ = run_streams(predictor, [grabber], RunOptions(surprise=settings),
                                   observers=[scores], log=lambda _: None)
    if summary.error:
        raise RuntimeError(f"{path}: {summary.error}")
    return scores


@dataclass(frozen=True)
class Matched:
    """Events against known ones: true / false / repeat events, detected known events, delays."""

    true_events: int
    false_events: int
    repeats: int
    detected: int
    known: int
    delays: list[int]


def match(events: Sequence[int], windows: Sequence[tuple[int, int]]) -> Matched:
    """Match event frames to known event windows [first, last] (inclusive, tolerance added)."""
    true_events = false_events = repeats = 0
    delays: list[int] = []
    hit = [False] * len(windows)
    for frame in events:
        inside = [i for i, (first, last) in enumerate(windows) if first <= frame <= last]
        if not inside:
            false_events += 1
        elif hit[inside[0]]:
            repeats += 1
        else:
            hit[inside[0]] = True
            true_events += 1
            delays.append(frame - windows[inside[0]][0])
    return Matched(true_events, false_events, repeats, sum(hit), len(windows), delays)


def run(model: str, settings: SurpriseSettings, json_path: Path | None = None,
        markdown_path: Path | None = None, plot_path: Path | None = None,
        force: bool = False) -> dict[str, Any]:
    """Stream every clip, match its events, print and write the report."""
    outputs = {key: refuse_overwrite(value, force) for key, value in
               (("json", json_path), ("markdown", markdown_path), ("plot", plot_path)) if value}
    predictor = Predictor.load(model)
    rows, traces = [], {}
    with tempfile.TemporaryDirectory(prefix="stae-surprise-") as folder:
        clips: list[tuple[str, Path, list[tuple[int, int]]]] = [
            (name, fetch(name), [(cut, cut + TOLERANCE_FRAMES) for cut in cuts])
            for name, cuts in CUTS.items()]
        clips.append((PASTED_CLIP, pasted_object_clip(Path(folder)),
                      [(first, end - 1 + TOLERANCE_FRAMES) for first, end in PASTED]))
        clips += [(name, fetch(name), []) for name in QUIET_CLIPS]
        for name, path, windows in clips:
            scores = stream_clip(predictor, path, settings)
            matched = match(scores.events, windows)
            traces[name] = (scores.scores, scores.events, windows)
            row = {"clip": name, "frames": scores.frames, "known_events": matched.known,
                   "events": len(scores.events), "true_events": matched.true_events,
                   "false_events": matched.false_events, "repeats": matched.repeats,
                   "detected": matched.detected,
                   "precision": (round(matched.true_events / (matched.true_events
                                                              + matched.false_events), 3)
                                 if matched.true_events + matched.false_events else None),
                   "recall": round(matched.detected / matched.known, 3) if matched.known
                   else None,
                   "delays_frames": matched.delays,
                   "false_per_1000_frames": round(1000 * matched.false_events / scores.frames,
                                                  2),
                   "event_frames": scores.events,
                   "peak_score_in_known_events": [
                       max((v for f, v in scores.scores if first <= f <= last), default=None)
                       for first, last in windows]}
            rows.append(row)
            print(f"{name}: {row['events']} event(s) at {scores.events}; known {windows}; "
                  f"precision {row['precision']}, recall {row['recall']}, delays "
                  f"{matched.delays}", file=sys.stderr, flush=True)
    quiet = [r for r in rows if not r["known_events"]]
    report = {"model": Path(model).name, "frame_hw": list(predictor.frame_hw),
              "settings": settings.to_dict(), "tolerance_frames": TOLERANCE_FRAMES,
              "machine": machine_info(provider="cpu", threads="onnxruntime default"),
              "rows": rows,
              "quiet_false_per_1000_frames": round(
                  1000 * sum(r["false_events"] for r in quiet)
                  / sum(r["frames"] for r in quiet), 2)}
    print(markdown_table(report))
    if "json" in outputs:
        write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    if "markdown" in outputs:
        write_text(outputs["markdown"], markdown_table(report))
    if "plot" in outputs:
        save_chart(outputs["plot"], traces, settings.threshold)
    for path in outputs.values():
        print(f"wrote {path}", file=sys.stderr)
    return report


def markdown_table(report: dict[str, Any]) -> str:
    """Per clip: events, precision, recall, delays, false events per 1000 frames."""
    settings = report["settings"]
    lines = [f"Surprise events of {report['model']} ({report['frame_hw'][0]}x"
             f"{report['frame_hw'][1]}) at threshold {settings['threshold']:g} (release "
             f"{settings['release']:g}, history {settings['window']} frames, min gap "
             f"{settings['min_gap_frames']}); an event within {report['tolerance_frames']} "
             f"frames after a known one detects it.", "",
             "| clip | frames | known events | events | precision | recall | delay (frames) "
             "| false events / 1000 frames |", "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(
            f"| {row['clip']} | {row['frames']} | {row['known_events']} | {row['events']} | "
            f"{'-' if row['precision'] is None else row['precision']} | "
            f"{'-' if row['recall'] is None else row['recall']} | "
            f"{', '.join(map(str, row['delays_frames'])) or '-'} | "
            f"{row['false_per_1000_frames']} |")
    lines += ["", f"Clips with no events together: {report['quiet_false_per_1000_frames']} "
              f"false events per 1000 frames.", ""]
    return "\n".join(lines)


def save_chart(path: Path, traces: dict[str, Any], threshold: float) -> Path:
    """One panel per clip: the surprise score over frames, the threshold, known events (shaded)
    and raised events (red ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes_grid = plt.subplots(len(traces), 1, figsize=(10, 1.9 * len(traces)), dpi=100,
                                     sharex=False)
    for axes, (name, (scores, events, windows)) in zip(axes_grid, traces.items()):
        if scores:
            frames, values = zip(*scores)
            axes.plot(frames, np.clip(values, -5, 30), linewidth=0.8)
        axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8)
        for first, last in windows:
            axes.axvspan(first, last, color="tab:green", alpha=0.25)
        for frame in events:
            axes.axvline(frame, color="tab:red", linewidth=1.2)
        axes.set_ylabel(name, rotation=0, ha="right", va="center")
        axes.set_ylim(-5, 30)
    axes_grid[-1].set_xlabel("source frame (green: known events; red: raised events; dashed: "
                             "threshold; scores clipped to [-5, 30])")
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    defaults = SurpriseSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX export (or engine) of the model")
    parser.add_argument("--threshold", type=float, default=defaults.threshold)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    return exit_code_of("surprise_events", lambda: run(
        args.model, SurpriseSettings(threshold=args.threshold), args.json, args.markdown,
        args.plot, args.force) and None)


if __name__ == "__main__":
    sys.exit(main())
