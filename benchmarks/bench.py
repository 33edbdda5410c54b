"""``stae bench``: per-step latency, GFLOP/s and peak memory of every backend in one run.

    stae bench [--checkpoint CKPT | --config cfg.json | --models all|NAME...]
               [--frame-sizes 256 512] [--batch N]
               [--steps 20] [--warmup 3] [--threads N] [--backends eager plain fast fp16 int8]
               [--json PATH|-] [--markdown PATH] [--plot PATH] [--work-dir DIR] [--no-memory]
               [--profile] [--force]

``--models`` benches the comparison models of ``stae_ref/models/`` one after another and adds
the paper's Table 2 for this machine (``stae_deploy.benchmarks.bench_models``).

For each frame size the model's artifacts are built in a work folder (``stae_deploy.benchmarks.bench_artifacts``),
then every backend (``stae_deploy.benchmarks.bench_backends``) steps the same real city frames, its state
carried: step t of every backend back to back (in an order rotating each step) before step t+1,
so all feel the same machine noise. Around that: the matmul peak at the same thread count
(``stae_deploy.benchmarks.bench_matmul``), each backend's peak RSS in a fresh process (``stae_deploy.benchmarks.bench_memory``)
and, with ``--profile``, onnxruntime's kernel time per op type (``stae_deploy.benchmarks.bench_profile``).

Row fields: ``latency_ms_median`` / ``latency_ms_p90`` over the timed steps; ``gflop_per_step``:
the reference's convolution FLOPs at that size (``stae_deploy.stae_ref.model_cost.gflop_per_step``, which counts
the Conv3d time-padding taps the fast graph does not compute, so the fast graph's GFLOP/s is
nominal) times the batch; ``gflops_achieved`` = gflop_per_step / median seconds;
``fraction_of_matmul_peak``: that over the best matmul GFLOP/s; ``ratio_to_pytorch_eager``:
median over eager's median at the same size; ``peak_rss_mb``, ``state_mb`` (all state inputs of
one step, from the protocol) and ``weight_mb`` (ONNX initializers; eager: parameters) in MiB.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from stae_deploy.benchmarks.bench_artifacts import build_artifacts
from stae_deploy.benchmarks.bench_backends import BACKENDS, EAGER, Backend, open_backend
from stae_deploy.benchmarks.bench_models import (comparison_markdown, comparison_rows, held_out_quality,
                                 model_source, paired_psnr_vs_stae, selected_models)
from stae_deploy.benchmarks.bench_matmul import MATMUL_SIZE, matmul_gflops
from stae_deploy.benchmarks.bench_memory import peak_rss_mb
from stae_deploy.benchmarks.bench_profile import op_time_share
from stae_deploy.benchmarks.bench_report import markdown_table, save_latency_chart, write_text
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.machine import machine_info
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.model_cost import gflop_per_step

CLIP = "city"
MEASURED_FIELDS = ("latency_ms_median", "latency_ms_p90", "peak_rss_mb", "gflop_per_step",
                   "gflops_achieved", "fraction_of_matmul_peak", "ratio_to_pytorch_eager",
                   "state_mb", "weight_mb")


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures; each field is the command-line option of the same name.

    frame_sizes: (H, W) pixels each; steps are timed after ``warmup`` untimed ones; threads:
    intra-op threads of torch, onnxruntime and the matmul contenders; memory: measure peak RSS
    (off: ``--no-memory``); force: overwrite existing output files and work-folder artifacts.
    """

    frame_sizes: tuple[tuple[int, int], ...]
    batch: int = 1
    steps: int = 20
    warmup: int = 3
    threads: int = os.cpu_count() or 1
    backends: tuple[str, ...] = tuple(BACKENDS)
    memory: bool = True
    profile: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        for option, value, minimum in (("batch", self.batch, 1), ("steps", self.steps, 1),
                                       ("warmup", self.warmup, 0), ("threads", self.threads, 1)):
            if value < minimum:
                raise ConfigError(f"--{option}: expected an integer >= {minimum}, got {value}")
        if not self.frame_sizes:
            raise ConfigError("--frame-sizes: give at least one frame size")
        if not self.backends or set(self.backends) - set(BACKENDS):
            raise ConfigError(f"--backends: expected some of {list(BACKENDS)}, "
                              f"got {list(self.backends)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model source (``stae_deploy.cli.args``) and the bench's own options."""
    from stae_deploy.cli.args import add_model_source, frame_size

    add_model_source(parser)
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="bench these configs of stae_ref/models/ ('all': every one) and "
                             "print the paper's Table 2 for this machine")
    parser.add_argument("--frame-sizes", type=frame_size, nargs="+", metavar="N|HxW",
                        default=[(256, 256), (512, 512)],
                        help="frame sizes to run the model's weights at")
    parser.add_argument("--batch", type=int, default=1,
                        help="frames per step (above 1 the graphs get a dynamic batch axis)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads of torch, onnxruntime and the matmul peak")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS),
                        help="; ".join(f"{k}: {kind.label}" for k, kind in BACKENDS.items()))
    parser.add_argument("--json", metavar="PATH",
                        help="write the report as JSON ('-': stdout, the table then on stderr)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table to this file")
    parser.add_argument("--plot", metavar="PATH",
                        help="PNG: median latency of each backend at each frame size, p90 whiskers")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="build the artifacts here and keep them (default: a temporary folder)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-RSS subprocesses (rows carry peak_rss_mb: null)")
    parser.add_argument("--profile", action="store_true",
                        help="onnxruntime's kernel time per op type (op_time_share in the JSON)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing --json/--markdown/--plot files and work-dir files")


def run(args: argparse.Namespace) -> int:
    """Bench every frame size, print the table, write the files asked for; exit status."""
    from stae_deploy.cli.args import model_source as source_of
    from stae_deploy.stae_ref.model_source import load_model

    settings = settings_from_args(args)
    outputs = {option: refuse_overwrite(path, args.force) for option, path in
               (("json", args.json), ("markdown", args.markdown), ("plot", args.plot))
               if path not in (None, "-")}
    if args.frame_size is not None:
        raise ConfigError("--frame-size: the bench runs at each of --frame-sizes; give them there")
    if args.models and (args.checkpoint or args.config):
        raise ConfigError("--models: each model brings its own weights; drop --checkpoint/--config")
    sources = [(name, model_source(name, args.seed)) for name in selected_models(args.models)] \
        if args.models else [(None, source_of(args))]
    print(f"matmul peak ({MATMUL_SIZE}x{MATMUL_SIZE} float32, {settings.threads} threads) ...",
          file=sys.stderr)
    matmul = matmul_gflops(settings.threads)
    rows: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    quality: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    with _work_folder(args.work_dir) as folder:
        for name, source in sources:
            model, provenance = load_model(source)
            label = name or model_name(args, provenance)
            params[label] = sum(p.numel() for p in model.parameters())
            quality[label] = held_out_quality(name) if name else None
            paired[label] = paired_psnr_vs_stae(name) if name else None
            model_folder = Path(folder) / name if name else Path(folder)
            for size in settings.frame_sizes:
                rows += bench_frame_size(model, provenance, _at_frame_size(model.config, size),
                                         model_folder, settings, matmul["best"], label)
    report = {"model": ", ".join(params), "threads": settings.threads, "machine": machine(),
              "matmul_gflops": matmul,
              "settings": {"frame_sizes": [list(size) for size in settings.frame_sizes],
                           "batch": settings.batch, "steps": settings.steps,
                           "warmup": settings.warmup, "backends": list(settings.backends),
                           "clip": CLIP, "matmul_size": MATMUL_SIZE},
              "rows": rows}
    if args.models:
        report["table2"] = comparison_rows(rows, params, quality, paired)
    table, report_json = markdown_table(report), json.dumps(report, indent=2) + "\n"
    if args.models:
        labels = [BACKENDS[key].label for key in settings.backends]
        table = comparison_markdown(report["table2"], labels, f"Table 2 on {machine()['cpu']} "
                                    f"({settings.threads} threads)") + "\n" + table
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        sys.stdout.write(report_json)
    if "json" in outputs:
        write_text(outputs["json"], report_json)
    if "markdown" in outputs:
        write_text(outputs["markdown"], table)
    if "plot" in outputs:
        save_latency_chart(outputs["plot"], rows)
    return 0


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The validated settings of the parsed command line."""
    return BenchSettings(
        frame_sizes=tuple(args.frame_sizes), batch=args.batch, steps=args.steps,
        warmup=args.warmup, threads=args.threads, backends=tuple(dict.fromkeys(args.backends)),
        memory=not args.no_memory, profile=args.profile, force=args.force)


def bench_frame_size(model: STAE, provenance: dict[str, Any], config: STAEConfig, folder: Path,
                     settings: BenchSettings, matmul_peak_gflops: float,
                     model_name: str) -> list[dict[str, Any]]:
    """One row per backend of ``settings`` with ``model``'s weights at ``config.frame_size``.

    Builds the artifacts in ``folder``/HxW, times all backends interleaved, then measures
    memory and (``settings.profile``) op time shares. A backend whose artifact could not be
    built gets a row with its ``error`` and null measurements.
    """
    model.config = config
    height, width = config.frame_size
    folder = folder / f"{height}x{width}"
    print(f"{height}x{width}: building {', '.join(settings.backends)} in {folder} ...",
          file=sys.stderr)
    paths, failures = build_artifacts(model, provenance, folder, settings.backends,
                                      dynamic_batch=settings.batch > 1, force=settings.force)
    backends = {key: open_backend(key, paths[key], config.frame_size, settings.batch,
                                  settings.threads)
                for key in settings.backends if key in paths}
    frames = city_frames(config.frame_size, settings.warmup + settings.steps)
    latencies_ms = interleaved_latencies_ms(backends, frames, settings.batch, settings.warmup,
                                            f"{height}x{width} batch {settings.batch}")
    gflop = gflop_per_step(model, config.frame_size) * settings.batch
    eager_median_ms = statistics.median(latencies_ms[EAGER]) if EAGER in latencies_ms else None
    rows = []
    for key in settings.backends:
        kind = BACKENDS[key]
        row: dict[str, Any] = {"model": model_name, "frame_size": [height, width],
                               "batch": settings.batch, "backend": kind.label, "note": kind.note,
                               "error": failures.get(key), **dict.fromkeys(MEASURED_FIELDS)}
        if key in backends:
            backend, times = backends[key], latencies_ms[key]
            median_ms = statistics.median(times)
            achieved = gflop / (median_ms / 1e3)
            row.update(
                latency_ms_median=median_ms, latency_ms_p90=float(np.percentile(times, 90)),
                gflop_per_step=gflop, gflops_achieved=achieved,
                fraction_of_matmul_peak=achieved / matmul_peak_gflops,
                ratio_to_pytorch_eager=median_ms / eager_median_ms if eager_median_ms else None,
                state_mb=backend.state_bytes() / 2 ** 20,
                weight_mb=backend.weight_bytes() / 2 ** 20,
                peak_rss_mb=peak_rss_mb(key, paths[key], config.frame_size, settings.batch,
                                        settings.threads) if settings.memory else None)
            if settings.profile and key != EAGER:
                row["op_time_share"] = op_time_share(
                    paths[key], _batched(frames, settings.batch), settings.batch,
                    settings.threads, settings.warmup, folder / f"profile.{key}")
        rows.append(row)
    return rows


def interleaved_latencies_ms(backends: Mapping[str, Backend], frames: np.ndarray, batch: int,
                             warmup: int, description: str) -> dict[str, list[float]]:
    """Backend key -> ms of each step after the first ``warmup``, all backends stepping frame t
    (in an order rotated by one each step) before any steps frame t + 1.

    frames: (steps, 3, H, W) float32; each step feeds its frame repeated ``batch`` times.
    """
    keys = list(backends)
    latencies: dict[str, list[float]] = {key: [] for key in keys}
    progress = tqdm(_batched(frames, batch), total=len(frames), desc=description, unit="step")
    for t, frame in enumerate(progress):
        turn = t % max(len(keys), 1)
        for key in keys[turn:] + keys[:turn]:
            start = time.perf_counter()
            backends[key].step(frame)
            if t >= warmup:
                latencies[key].append((time.perf_counter() - start) * 1e3)
    return latencies


def city_frames(frame_size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` real frames (count, 3, H, W) float32 of the city clip, played forward then
    backward if the clip is shorter."""
    clip = load_clip(CLIP, frame_size, max_frames=count)
    return clip if len(clip) == count else forward_backward(clip, count)


def model_name(args: argparse.Namespace, provenance: dict[str, Any]) -> str:
    """The checkpoint's file name, or where a random model's config came from and its seed."""
    if args.checkpoint:
        return Path(args.checkpoint).name
    source = Path(args.config).name if args.config else "paper config"
    return f"{source}, seed {provenance['random_seed']}"


def machine() -> dict[str, Any]:
    """:func:`stae_deploy.runtime.machine.machine_info` plus the torch version."""
    import torch

    return machine_info(torch=torch.__version__)


def _batched(frames: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    """Each frame (3, H, W) repeated into a contiguous (batch, 3, H, W) array."""
    for frame in frames:
        yield np.repeat(frame[None], batch, axis=0)


def _at_frame_size(config: STAEConfig, size: tuple[int, int]) -> STAEConfig:
    try:
        return config.with_frame_size(size)
    except ConfigError as err:
        raise ConfigError(f"--frame-sizes {size[0]}x{size[1]}: {err}") from None


def _work_folder(work_dir: str | None) -> contextlib.AbstractContextManager[str]:
    """A temporary folder removed afterwards, or ``work_dir`` (created, kept)."""
    if work_dir is None:
        return tempfile.TemporaryDirectory(prefix="stae-bench-")
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(work_dir)
