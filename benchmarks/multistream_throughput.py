"""Frames/s of N camera streams on one model: one batched step per round vs one stream at a time.

    python -m stae_deploy.benchmarks.multistream_throughput MODEL.onnx [--streams 1 2 4 8]
        [--steps 40] [--warmup 3] [--threads N] [--provider cpu] [--separate-sessions]
        [--json F] [--markdown F] [--plot F] [--force]

MODEL must have a dynamic batch (``stae export --dynamic-batch``). For each stream count N, N
streams watch different real footage (the carphone, city and motion clips in turn; a clip used by
several streams is started at evenly spread offsets, so no two streams see the same frame in the
same round; a stream reaching the clip's end wraps to its start). Each round feeds every stream
its next frame, two ways:

* batched: one ``Predictor.step_many(streams, frames)``, all N streams in one run (max_batch None);
* one at a time: ``step_many`` of a second Predictor with ``max_batch=1`` (the same code, N runs of
  batch 1 in sequence) on its own N streams.

Both Predictors share one onnxruntime session (``Predictor(predictor.backend, max_batch=1)``):
two sessions stepped in turn steal each other's cores with their spinning workers (see
``stae_deploy.benchmarks.bench_backends.no_spinning``), and one session is what a deployment
would run.
``--separate-sessions`` opens a second session instead (``Predictor.load(..., max_batch=1)``),
as a deployment running batch 1 only would, spinning workers and all. The two
ways alternate which goes first each round, so both feel the same machine noise; ``--warmup``
rounds are run first and not timed.

Per N: the median (and p90) ms per round of each way; frames/s = N / median round seconds;
``speedup`` = one-at-a-time median / batched median (``speedup_paired`` = the median of the
per-round ratios); per-stream latency = the batched round time (every stream's prediction arrives
when the one run ends), while one at a time a stream waits its own step (round / N) plus those of
the streams stepped before it (the last waits the whole round). A progress line per N goes to
stderr, a table to stdout; ``--json``, ``--markdown`` and ``--plot`` (PNG: frames/s vs streams)
write files, refusing to overwrite without ``--force``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stae_deploy.benchmarks.bench_report import (fixed_width_table, markdown_rows, table_grid,
                                                  write_text)
from stae_deploy.runtime.backends.onnxruntime_backend import PROVIDERS
from stae_deploy.runtime.errors import ConfigError, NonFiniteStateError, exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_figure
from stae_deploy.runtime.machine import machine_info
from stae_deploy.runtime.predictor import Predictor, Stream
from stae_deploy.runtime.protocol import DYNAMIC_BATCH
from stae_deploy.stae_ref.footage import load_clips

CLIP_ORDER = ("carphone", "city", "motion")     # stream i watches CLIP_ORDER[i % 3]
WARMUP_ROUNDS = 3
WAYS = ("batched", "one_at_a_time")


def stream_sources(count: int, clip_lengths: Mapping[str, int],
                   order: Sequence[str] = CLIP_ORDER) -> list[tuple[str, int]]:
    """(clip name, start frame) of each of ``count`` streams: stream i watches
    ``order[i % len(order)]``; the k-th of the c streams on a clip of K frames starts at k * K // c,
    so streams sharing a clip are spread evenly over it (distinct starts while c <= K)."""
    sharing = {name: sum(1 for i in range(count) if order[i % len(order)] == name)
               for name in order}
    sources = []
    for i in range(count):
        name = order[i % len(order)]
        sources.append((name, (i // len(order)) * clip_lengths[name] // sharing[name]))
    return sources


def frame_index(start: int, round_index: int, length: int) -> int:
    """Index of the clip frame a stream starting at ``start`` sees in round ``round_index`` (the
    clip of ``length`` frames wraps around)."""
    return (start + round_index) % length


def round_frames(clips: Mapping[str, np.ndarray], sources: Sequence[tuple[str, int]],
                 round_index: int) -> list[np.ndarray]:
    """Each stream's frame (3, H, W) float32 in round ``round_index``; clips: name -> (K, 3, H, W)
    float32."""
    return [clips[name][frame_index(start, round_index, len(clips[name]))]
            for name, start in sources]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(count: int, batched_ms: Sequence[float], one_at_a_time_ms: Sequence[float]
              ) -> dict[str, Any]:
    """The report row of one stream count from the per-round ms of each way (same rounds, in
    order, so round r of one way pairs with round r of the other)."""
    batched, single = statistics.median(batched_ms), statistics.median(one_at_a_time_ms)
    return {
        "streams": count,
        "rounds": len(batched_ms),
        "batched_round_ms_median": round(batched, 3),
        "batched_round_ms_p90": round(percentile(batched_ms, 90), 3),
        "one_at_a_time_round_ms_median": round(single, 3),
        "one_at_a_time_round_ms_p90": round(percentile(one_at_a_time_ms, 90), 3),
        "batched_fps": round(count / (batched / 1e3), 2),
        "one_at_a_time_fps": round(count / (single / 1e3), 2),
        "speedup": round(single / batched, 3),
        "speedup_paired": round(statistics.median(
            s / b for b, s in zip(batched_ms, one_at_a_time_ms)), 3),
        "batched_latency_ms": round(batched, 3),
        "one_at_a_time_step_ms": round(single / count, 3),
        "one_at_a_time_last_stream_latency_ms": round(single, 3),
    }


def _timed_round_ms(predictor: Predictor, streams: list[Stream], frames: list[np.ndarray]
                    ) -> float:
    """Ms of one ``step_many`` of ``streams``; raises if any stream produced NaN/Inf (a benchmark
    of a diverging model would time the reset path, not the model)."""
    start = time.perf_counter()
    results = predictor.step_many(streams, frames)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    for i, result in enumerate(results):
        if isinstance(result, NonFiniteStateError):
            raise RuntimeError(f"stream {i}: {result}")
    return elapsed_ms


def measure(batched: Predictor, one_at_a_time: Predictor, clips: Mapping[str, np.ndarray],
            count: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Way -> ms of each timed round for ``count`` streams (fresh streams per way), after
    ``warmup`` untimed rounds; the way that goes first alternates every round."""
    sources = stream_sources(count, {name: len(frames) for name, frames in clips.items()})
    ways = {"batched": (batched, [batched.new_stream() for _ in range(count)]),
            "one_at_a_time": (one_at_a_time, [one_at_a_time.new_stream() for _ in range(count)])}
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for r in range(warmup + rounds):
            frames = round_frames(clips, sources, r)
            for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
                predictor, streams = ways[way]
                elapsed_ms = _timed_round_ms(predictor, streams, frames)
                if r >= warmup:
                    times[way].append(elapsed_ms)
    finally:
        for _, streams in ways.values():
            for stream in streams:
                stream.close()
    return times


TABLE = (   # (header, row field, format)
    ("streams", "streams", "{}"),
    ("batched ms/round", "batched_round_ms_median", "{:.2f}"),
    ("one-at-a-time ms/round", "one_at_a_time_round_ms_median", "{:.2f}"),
    ("batched frames/s", "batched_fps", "{:.1f}"),
    ("one-at-a-time frames/s", "one_at_a_time_fps", "{:.1f}"),
    ("speed-up", "speedup", "{:.2f}x"),
    ("latency ms batched", "batched_latency_ms", "{:.2f}"),
    ("latency ms one-at-a-time (own step .. last)", None, None),
)


def _cells(row: Mapping[str, Any]) -> list[str]:
    """The table cells of one report row."""
    waits = (f"{row['one_at_a_time_step_ms']:.2f} .. "
             f"{row['one_at_a_time_last_stream_latency_ms']:.2f}")
    return [waits if key is None else form.format(row[key]) for _, key, form in TABLE]


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Fixed-width table of the report rows, for the terminal."""
    return fixed_width_table(table_grid(TABLE, rows, _cells))


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as markdown: a line on the model and machine, the table, and what it means."""
    host, settings = report["machine"], report["settings"]
    lines = [f"Multi-stream throughput: {report['model']} ({report['frame_hw'][0]}x"
             f"{report['frame_hw'][1]}), {host['provider']}, threads: {host['threads']}, on "
             f"{host['cpu']} ({host['cpu_count']} CPUs, {host['cpus_available']} available); "
             f"onnxruntime {host['onnxruntime']}; median of {settings['rounds']} rounds after "
             f"{settings['warmup_rounds']} warm-up, the two ways interleaved round by round.", ""]
    lines += markdown_rows(table_grid(TABLE, report["rows"], _cells))
    lines += ["", "A round feeds every stream one frame. Batched: one step_many of all streams "
              "(one run of batch N); one at a time: the same step_many with max_batch=1 (N runs "
              "of batch 1). frames/s = streams / median round time; speed-up = one-at-a-time "
              "median / batched median. Latency: batched, every stream waits the whole round; "
              "one at a time, a stream waits its own step up to the whole round (the last one).",
              ""]
    return "\n".join(lines)


def save_chart(path: Path, rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """PNG of frames/s vs stream count, one line per way, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [row["streams"] for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    axes.plot(counts, [row["batched_fps"] for row in rows], marker="o",
              label="batched (one step_many, batch N)")
    axes.plot(counts, [row["one_at_a_time_fps"] for row in rows], marker="s",
              label="one stream at a time (batch 1, N runs)")
    if len(counts) > 1 and max(counts) / min(counts) >= 8:
        axes.set_xscale("log", base=2)
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.set(xlabel="streams", ylabel="frames/s (all streams)", title=title)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    return save_figure(figure, path)


def open_predictors(model: str, provider: str, threads: int | None,
                    separate_sessions: bool = False) -> tuple[Predictor, Predictor]:
    """(batched, one-at-a-time) Predictors on one session of ``model`` (or one session each);
    ConfigError unless its batch is dynamic."""
    batched = Predictor.load(model, provider=provider, threads=threads)
    if batched.spec.batch != DYNAMIC_BATCH:
        raise ConfigError(f"{model}: the model's batch is fixed at {batched.spec.batch}, so "
                          f"streams cannot be batched; export it with `stae export "
                          f"--dynamic-batch` and pass that file")
    if separate_sessions:
        return batched, Predictor.load(model, provider=provider, threads=threads, max_batch=1)
    return batched, Predictor(batched.backend, max_batch=1)


@dataclass(frozen=True)
class ThroughputSettings:
    """What to measure.

    model:             an ONNX export with a dynamic batch.
    streams:           the stream counts to measure, each >= 1.
    rounds:            timed rounds per stream count (>= 1); warmup: untimed rounds first (>= 0).
    provider:          onnxruntime execution provider; threads: intra-op threads (None: its
                       default, one per physical core).
    separate_sessions: one-at-a-time on its own onnxruntime session instead of the shared one.
    """

    model: str
    streams: tuple[int, ...] = (1, 2, 4, 8)
    rounds: int = 40
    warmup: int = WARMUP_ROUNDS
    provider: str = "cpu"
    threads: int | None = None
    separate_sessions: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        if not self.streams or any(n < 1 for n in self.streams):
            raise ConfigError(f"streams: expected counts >= 1, got {list(self.streams)}")
        if self.rounds < 1:
            raise ConfigError(f"rounds: expected >= 1, got {self.rounds}")
        if self.warmup < 0:
            raise ConfigError(f"warmup: expected >= 0, got {self.warmup}")


def run(settings: ThroughputSettings, json_path: Path | None = None,
        markdown_path: Path | None = None, plot_path: Path | None = None,
        force: bool = False) -> dict[str, Any]:
    """Measure every stream count, print the table, write the files given (refusing to overwrite
    unless ``force``); returns the report."""
    outputs = {key: refuse_overwrite(value, force) for key, value in
               (("json", json_path), ("markdown", markdown_path), ("plot", plot_path)) if value}
    batched, one_at_a_time = open_predictors(settings.model, settings.provider, settings.threads,
                                             settings.separate_sessions)
    clips = load_clips(CLIP_ORDER, batched.frame_hw)
    rows = []
    for count in settings.streams:
        started = time.perf_counter()
        times = measure(batched, one_at_a_time, clips, count, settings.rounds, settings.warmup)
        row = summarize(count, times["batched"], times["one_at_a_time"])
        rows.append(row)
        print(f"{count} stream(s): batched {row['batched_round_ms_median']:.2f} ms/round "
              f"({row['batched_fps']:.1f} frames/s), one at a time "
              f"{row['one_at_a_time_round_ms_median']:.2f} ms/round "
              f"({row['one_at_a_time_fps']:.1f} frames/s), speed-up {row['speedup']:.2f}x "
              f"[{time.perf_counter() - started:.1f} s]", file=sys.stderr, flush=True)
    report = {"model": Path(settings.model).name,
              "model_path": str(Path(settings.model).resolve()),
              "frame_hw": list(batched.frame_hw),
              "machine": machine_info(provider=settings.provider,
                                      threads=settings.threads or "onnxruntime default"),
              "settings": {"streams": list(settings.streams), "rounds": settings.rounds,
                           "warmup_rounds": settings.warmup, "clips": list(CLIP_ORDER),
                           "shared_session": not settings.separate_sessions},
              "rows": rows}
    print(text_table(rows))
    if "json" in outputs:
        write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    if "markdown" in outputs:
        write_text(outputs["markdown"], markdown_table(report))
    if "plot" in outputs:
        save_chart(outputs["plot"], rows, f"{report['model']}: frames/s vs streams "
                   f"({report['machine']['cpu_count']} CPUs, {settings.provider})")
    for path in outputs.values():
        print(f"wrote {path}", file=sys.stderr)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX export with a dynamic batch")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=40, help="timed rounds per stream count")
    parser.add_argument("--warmup", type=int, default=WARMUP_ROUNDS, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: one per physical core)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu",
                        help="onnxruntime execution provider")
    parser.add_argument("--separate-sessions", action="store_true",
                        help="one-at-a-time on its own onnxruntime session (default: shared)")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--plot", type=Path, help="write a PNG of frames/s vs streams here")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)

    def measure_and_report() -> None:
        settings = ThroughputSettings(
            model=args.model, streams=tuple(args.streams), rounds=args.steps, warmup=args.warmup,
            provider=args.provider, threads=args.threads,
            separate_sessions=args.separate_sessions)
        run(settings, args.json, args.markdown, args.plot, args.force)

    return exit_code_of("multistream_throughput", measure_and_report)


if __name__ == "__main__":
    sys.exit(main())
