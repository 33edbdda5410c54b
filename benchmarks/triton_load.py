"""Serving overhead: a real Triton server under sequence-mode load vs the same model in process.

    python -m stae_deploy.benchmarks.triton_load MODEL.onnx [--concurrency 1 2 4 8]
        [--seconds 8] [--warmup-s 2] [--repeats 3] [--sequence-length 100] [--threads N]
        [--queue-delay-us 0] [--json F] [--markdown F] [--plot F] [--force]

MODEL must have a dynamic batch. The script writes a Python-backend repository of it in a
temporary folder and starts the tritonserver of the nvidia-pytriton wheel on 127.0.0.1
(``stae_deploy.serving.triton_server``).

``perf_analyzer`` cannot be installed here (PyPI holds only a 0.1.0 placeholder of it), so this
load generator does what its sequence mode does: C concurrent sequences, each a thread with its
own gRPC connection that sends one request and the next as soon as the answer arrives; frames of
real footage (stream i watches the carphone, city or motion clip, like
``stae_deploy.benchmarks.multistream_throughput``); each sequence ``--sequence-length`` frames
(START ... END), then a new one. Triton frames/s = requests answered in the window / window
seconds; latency = send to answer per request (ms).

In process: the same ONNX file in a :class:`Predictor` with the same onnxruntime threads, C
streams stepped as one ``step_many`` per round (what ``stae run`` does with C inputs); frames/s =
C x rounds / window seconds; latency = the round (every stream's answer arrives with it).

Both ways run in the same process tree on the same cores, window after window: for each repeat,
each concurrency measures Triton and then in-process (the order flips every repeat), and the
medians over repeats are reported. ``overhead`` is Triton frames/s / in-process frames/s (of the
medians; ``paired``: the median of each repeat's ratio, which machine drift between repeats
does not move). The
server's mean batch (inferences / executions, from its statistics) shows how well the sequence
batcher gathered the concurrent sequences. Progress goes to stderr, the table to stdout;
``--json``, ``--markdown`` and ``--plot`` (PNG) write files, refusing to overwrite without
``--force``.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stae_deploy.benchmarks.bench_report import (fixed_width_table, markdown_rows, table_grid,
                                                  write_text)
from stae_deploy.benchmarks.multistream_throughput import (CLIP_ORDER, percentile, round_frames,
                                                           stream_sources)
from stae_deploy.runtime.errors import ConfigError, exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.machine import machine_info
from stae_deploy.runtime.plots import save_figure
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.serving.triton_client import SequenceRequest, TritonSequenceClient
from stae_deploy.serving.triton_python_repository import write_python_repository
from stae_deploy.serving.triton_repository import TritonOptions
from stae_deploy.serving.triton_server import ServerSettings, TritonServer, free_ports
from stae_deploy.stae_ref.footage import load_clips

MODEL_NAME = "stae"


@dataclass(frozen=True)
class LoadSettings:
    """What to measure.

    model:           an ONNX export with a dynamic batch.
    concurrency:     concurrent sequences (streams) to measure, each >= 1.
    seconds:         the measured window per concurrency and way, seconds (> 0).
    warmup_s:        load before each window that is not measured, seconds (>= 0).
    repeats:         windows per concurrency and way (>= 1); medians are reported.
    sequence_length: frames per Triton sequence before a new one starts (>= 2).
    threads:         onnxruntime intra-op threads, in the server and in process (None: its
                     default, one per physical core).
    queue_delay_us:  the sequence batcher's max_queue_delay_microseconds (>= 0).
    """

    model: str
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    seconds: float = 8.0
    warmup_s: float = 2.0
    repeats: int = 3
    sequence_length: int = 100
    threads: int | None = None
    queue_delay_us: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", tuple(self.concurrency))
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise ConfigError(f"concurrency: expected counts >= 1, got {list(self.concurrency)}")
        if self.seconds <= 0:
            raise ConfigError(f"seconds: expected > 0, got {self.seconds}")
        for name, value, low in (("warmup_s", self.warmup_s, 0), ("repeats", self.repeats, 1),
                                 ("queue_delay_us", self.queue_delay_us, 0)):
            if value < low:
                raise ConfigError(f"{name}: expected >= {low}, got {value}")
        if self.sequence_length < 2:
            raise ConfigError(f"sequence_length: expected >= 2, got {self.sequence_length}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected None or >= 1, got {self.threads}")


@dataclass(frozen=True)
class Window:
    """One measured window of one way: frames answered, window seconds, latencies (ms)."""

    frames: int
    seconds: float
    latency_ms: list[float]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def _sequence_sender(url: str, frames: list[np.ndarray], settings: LoadSettings,
                     stop: threading.Event, done: list[tuple[float, float]],
                     errors: list[BaseException]) -> None:
    """One concurrent sequence: send frames one request at a time until ``stop``; append
    (sent, answered) perf_counter seconds of each request to ``done``."""
    try:
        with TritonSequenceClient.connect(url, MODEL_NAME) as client:
            sequence_id, k = secrets.randbelow(1 << 62), 0      # unique among the senders
            while not stop.is_set():
                position = k % settings.sequence_length
                if position == 0:
                    sequence_id += 1
                request = SequenceRequest(frames[k % len(frames)][None], sequence_id,
                                          start=position == 0,
                                          end=position == settings.sequence_length - 1)
                sent = time.perf_counter()
                client.infer(request)
                done.append((sent, time.perf_counter()))
                k += 1
            if k % settings.sequence_length:       # leave no sequence open on the server
                client.infer(SequenceRequest(frames[0][None], sequence_id, False, True))
    except BaseException as err:                   # reported by the measuring thread
        errors.append(err)


def triton_window(url: str, clips: Mapping[str, np.ndarray], concurrency: int,
                  settings: LoadSettings) -> Window:
    """``concurrency`` sequences against the server for warm-up + window; the window's count."""
    sources = stream_sources(concurrency, {name: len(f) for name, f in clips.items()})
    stop = threading.Event()
    records: list[list[tuple[float, float]]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    threads = []
    for i, (name, start) in enumerate(sources):
        frames = list(np.roll(clips[name], -start, axis=0))
        threads.append(threading.Thread(target=_sequence_sender, daemon=True, args=(
            url, frames, settings, stop, records[i], errors)))
    for thread in threads:
        thread.start()
    time.sleep(settings.warmup_s)
    begin = time.perf_counter()
    time.sleep(settings.seconds)
    end = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    latencies = [(answered - sent) * 1e3 for per_thread in records
                 for sent, answered in per_thread if begin <= answered < end]
    return Window(len(latencies), end - begin, latencies)


def in_process_window(predictor: Predictor, clips: Mapping[str, np.ndarray], concurrency: int,
                      settings: LoadSettings) -> Window:
    """``concurrency`` streams stepped as one batch per round for warm-up + window."""
    sources = stream_sources(concurrency, {name: len(f) for name, f in clips.items()})
    streams = [predictor.new_stream() for _ in range(concurrency)]
    latencies: list[float] = []
    start = time.perf_counter()
    begin, end = start + settings.warmup_s, start + settings.warmup_s + settings.seconds
    rounds = 0
    try:
        while True:
            sent = time.perf_counter()
            if sent >= end:
                break
            predictor.step_many(streams, round_frames(clips, sources, rounds))
            answered = time.perf_counter()
            rounds += 1
            if begin <= answered < end:
                latencies.append((answered - sent) * 1e3)
    finally:
        for stream in streams:
            stream.close()
    return Window(len(latencies) * concurrency, settings.seconds, latencies)


def server_batches(server: TritonServer) -> tuple[int, int]:
    """(inferences, executions) the server's model has run so far."""
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{MODEL_NAME}/stats",
                                timeout=10) as answer:
        [stats] = json.load(answer)["model_stats"]
    return int(stats["inference_count"]), int(stats["execution_count"])


def summarize(concurrency: int, triton: Sequence[Window], local: Sequence[Window],
              mean_batch: float) -> dict[str, Any]:
    """The report row of one concurrency from its windows (medians over repeats)."""
    triton_fps = statistics.median(w.fps for w in triton)
    local_fps = statistics.median(w.fps for w in local)

    def latency(windows: Sequence[Window], q: float) -> float:
        return round(statistics.median(percentile(w.latency_ms, q) for w in windows), 2)

    return {"concurrency": concurrency, "repeats": len(triton),
            "triton_fps": round(triton_fps, 2), "in_process_fps": round(local_fps, 2),
            "overhead_ratio": round(triton_fps / local_fps, 3),
            "overhead_ratio_paired": round(statistics.median(
                t.fps / w.fps for t, w in zip(triton, local)), 3),
            "triton_p50_ms": latency(triton, 50), "triton_p99_ms": latency(triton, 99),
            "in_process_p50_ms": latency(local, 50), "in_process_p99_ms": latency(local, 99),
            "server_mean_batch": round(mean_batch, 2),
            "triton_fps_per_repeat": [round(w.fps, 2) for w in triton],
            "in_process_fps_per_repeat": [round(w.fps, 2) for w in local]}


TABLE = (   # (header, row field, format)
    ("concurrent sequences", "concurrency", "{}"),
    ("Triton frames/s", "triton_fps", "{:.1f}"),
    ("in-process frames/s", "in_process_fps", "{:.1f}"),
    ("Triton / in-process", "overhead_ratio", "{:.2f}"),
    ("paired ratio", "overhead_ratio_paired", "{:.2f}"),
    ("Triton p50 ms", "triton_p50_ms", "{:.1f}"),
    ("Triton p99 ms", "triton_p99_ms", "{:.1f}"),
    ("in-process p50 ms", "in_process_p50_ms", "{:.1f}"),
    ("in-process p99 ms", "in_process_p99_ms", "{:.1f}"),
    ("server mean batch", "server_mean_batch", "{:.2f}"),
)


def _cells(row: Mapping[str, Any]) -> list[str]:
    return [form.format(row[key]) for _, key, form in TABLE]


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as markdown: model and machine, the table, and how it was measured."""
    host, settings = report["machine"], report["settings"]
    lines = [f"Triton under load: {report['model']} ({report['frame_hw'][0]}x"
             f"{report['frame_hw'][1]}), tritonserver {report['tritonserver']} (Python backend, "
             f"onnxruntime CPU, threads: {host['threads']}) vs in-process `step_many`, on "
             f"{host['cpu']} ({host['cpu_count']} CPUs, {host['cpus_available']} available); "
             f"median of {settings['repeats']} windows of {settings['seconds']:g} s (after "
             f"{settings['warmup_s']:g} s of load) per cell, the ways interleaved.", ""]
    lines += markdown_rows(table_grid(TABLE, report["rows"], _cells))
    lines += ["", "Triton: C sequences, each its own gRPC connection sending the next frame when "
              "the answer arrives (perf_analyzer's sequence mode, self-written: perf_analyzer is "
              f"not installable here); sequences of {settings['sequence_length']} frames. "
              "In process: C streams in one step_many per round. Latency: per request (Triton), "
              "per round (in process). The client threads share the cores with the server. "
              "Paired ratio: the median of each repeat's Triton / in-process ratio (both "
              "measured back to back).", ""]
    return "\n".join(lines)


def save_chart(path: Path, rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """PNG: frames/s (left) and p50/p99 latency (right) vs concurrent sequences, both ways."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [row["concurrency"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    left.plot(counts, [r["triton_fps"] for r in rows], marker="o", label="Triton (gRPC)")
    left.plot(counts, [r["in_process_fps"] for r in rows], marker="s",
              label="in process (step_many)")
    left.set(xlabel="concurrent sequences", ylabel="frames/s (all sequences)",
             title="throughput")
    left.set_ylim(bottom=0)
    for way, marker in (("triton", "o"), ("in_process", "s")):
        label = "Triton" if way == "triton" else "in process"
        right.plot(counts, [r[f"{way}_p50_ms"] for r in rows], marker=marker,
                   label=f"{label} p50")
        right.plot(counts, [r[f"{way}_p99_ms"] for r in rows], marker=marker, linestyle="--",
                   label=f"{label} p99")
    right.set(xlabel="concurrent sequences", ylabel="ms", title="latency per frame")
    right.set_ylim(bottom=0)
    for axes in (left, right):
        axes.set_xticks(counts, [str(c) for c in counts])
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    return save_figure(figure, path)


def run(settings: LoadSettings, json_path: Path | None = None, markdown_path: Path | None = None,
        plot_path: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Start the server, measure every concurrency both ways, print the table and write the
    files given (refusing to overwrite unless ``force``); returns the report."""
    outputs = {key: refuse_overwrite(value, force) for key, value in
               (("json", json_path), ("markdown", markdown_path), ("plot", plot_path)) if value}
    predictor = Predictor.load(settings.model, threads=settings.threads)
    clips = load_clips(CLIP_ORDER, predictor.frame_hw)
    windows: dict[int, dict[str, list[Window]]] = {
        c: {"triton": [], "in_process": []} for c in settings.concurrency}
    batches: dict[int, list[tuple[int, int]]] = {c: [] for c in settings.concurrency}
    with tempfile.TemporaryDirectory(prefix="stae-triton-load-") as folder:
        repository = Path(folder) / "repository"
        write_python_repository(settings.model, repository, TritonOptions(
            model_name=MODEL_NAME, max_batch=max(settings.concurrency),
            max_queue_delay_us=settings.queue_delay_us), threads=settings.threads or 0)
        with TritonServer(ServerSettings(repository, *free_ports(3))) as server:
            version = server.version()
            for repeat in range(settings.repeats):
                for concurrency in settings.concurrency:
                    ways = ("triton", "in_process") if repeat % 2 == 0 else ("in_process",
                                                                             "triton")
                    for way in ways:
                        if way == "triton":
                            before = server_batches(server)
                            window = triton_window(server.grpc_url, clips, concurrency,
                                                   settings)
                            after = server_batches(server)
                            batches[concurrency].append((after[0] - before[0],
                                                         after[1] - before[1]))
                        else:
                            window = in_process_window(predictor, clips, concurrency, settings)
                        windows[concurrency][way].append(window)
                        print(f"repeat {repeat + 1}/{settings.repeats}, {concurrency} "
                              f"sequence(s), {way}: {window.fps:.1f} frames/s, p50 "
                              f"{percentile(window.latency_ms, 50):.1f} ms", file=sys.stderr,
                              flush=True)
    rows = []
    for concurrency in settings.concurrency:
        inferences = sum(i for i, _ in batches[concurrency])
        executions = sum(e for _, e in batches[concurrency])
        rows.append(summarize(concurrency, windows[concurrency]["triton"],
                              windows[concurrency]["in_process"],
                              inferences / executions if executions else float("nan")))
    report = {"model": Path(settings.model).name,
              "model_path": str(Path(settings.model).resolve()),
              "frame_hw": list(predictor.frame_hw), "tritonserver": version,
              "machine": machine_info(provider="cpu",
                                      threads=settings.threads or "onnxruntime default"),
              "settings": {"concurrency": list(settings.concurrency),
                           "seconds": settings.seconds, "warmup_s": settings.warmup_s,
                           "repeats": settings.repeats,
                           "sequence_length": settings.sequence_length,
                           "queue_delay_us": settings.queue_delay_us,
                           "clips": list(CLIP_ORDER)},
              "rows": rows}
    print(fixed_width_table(table_grid(TABLE, rows, _cells)))
    if "json" in outputs:
        write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    if "markdown" in outputs:
        write_text(outputs["markdown"], markdown_table(report))
    if "plot" in outputs:
        save_chart(outputs["plot"], rows, f"{report['model']}: Triton vs in process "
                   f"({report['machine']['cpu_count']} CPUs)")
    for path in outputs.values():
        print(f"wrote {path}", file=sys.stderr)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    defaults = LoadSettings(model="")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX export with a dynamic batch")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(defaults.concurrency))
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="measured window per concurrency and way")
    parser.add_argument("--warmup-s", type=float, default=defaults.warmup_s,
                        help="unmeasured load before each window")
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--sequence-length", type=int, default=defaults.sequence_length)
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: one per physical core)")
    parser.add_argument("--queue-delay-us", type=int, default=defaults.queue_delay_us,
                        help="the sequence batcher's max_queue_delay_microseconds")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the table here")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)

    def measure_and_report() -> None:
        run(LoadSettings(model=args.model, concurrency=tuple(args.concurrency),
                         seconds=args.seconds, warmup_s=args.warmup_s, repeats=args.repeats,
                         sequence_length=args.sequence_length, threads=args.threads,
                         queue_delay_us=args.queue_delay_us),
            args.json, args.markdown, args.plot, args.force)

    return exit_code_of("triton_load", measure_and_report)


if __name__ == "__main__":
    sys.exit(main())
