"""Per-step latency, GFLOP/s and peak memory of every backend in one run: what ``stae bench``
measures (:class:`BenchSettings` -> :func:`run_bench` -> report).

``models`` benches the comparison models of ``stae_ref/models/`` one after another and adds
the paper's Table 2 for this machine (``stae_deploy.benchmarks.bench_models``); with
``paper_config``, at the paper's depth, width and latent sizes instead of the configs' own.

For each frame size the model's artifacts are built in a work folder (``stae_deploy.benchmarks.bench_artifacts``),
then every backend (``stae_deploy.benchmarks.bench_backends``) steps the same real city frames, its state
carried: step t of every backend back to back (in an order rotating each step) before step t+1,
so all feel the same machine noise. Around that: the matmul peak at the same thread count
(``stae_deploy.benchmarks.bench_matmul``), each backend's peak RSS in a fresh process (``stae_deploy.benchmarks.bench_memory``)
and, with ``profile``, onnxruntime's kernel time per op type (``stae_deploy.benchmarks.bench_profile``).

Row fields: ``latency_ms_median`` / ``latency_ms_p90`` over the timed steps; ``gflop_per_step``:
the reference's convolution FLOPs at that size (``stae_deploy.stae_ref.model_cost.gflop_per_step``, which counts
the Conv3d time-padding taps the fast graph does not compute, so the fast graph's GFLOP/s is
nominal) times the batch; ``gflops_achieved`` = gflop_per_step / median seconds;
``fraction_of_matmul_peak``: that over the best matmul GFLOP/s; ``ratio_to_pytorch_eager``:
median over eager's median at the same size; ``peak_rss_mb``, ``state_mb`` (all state inputs of
one step, from the protocol) and ``weight_mb`` (ONNX initializers; eager: parameters) in MiB;
``latent_shape``: (C, T, h, w) of the model's latent at that frame size.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from stae_deploy.benchmarks.bench_artifacts import build_artifacts
from stae_deploy.benchmarks.bench_backends import BACKENDS, EAGER, Backend, open_backend
from stae_deploy.benchmarks.bench_models import (comparison_markdown, comparison_rows,
                                                 held_out_quality, model_source,
                                                 paired_psnr_vs_stae, paper_config_source,
                                                 selected_models)
from stae_deploy.benchmarks.bench_matmul import MATMUL_SIZE, matmul_gflops
from stae_deploy.benchmarks.bench_memory import peak_rss_mb
from stae_deploy.benchmarks.bench_profile import op_time_share
from stae_deploy.benchmarks.bench_report import markdown_table
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.machine import machine_info
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.model_source import ModelSource, load_model
from stae_deploy.stae_ref.model_cost import gflop_per_step

CLIP = "city"
MEASURED_FIELDS = ("latency_ms_median", "latency_ms_p90", "peak_rss_mb", "gflop_per_step",
                   "gflops_achieved", "fraction_of_matmul_peak", "ratio_to_pytorch_eager",
                   "state_mb", "weight_mb")


@dataclass(frozen=True)
class BenchSettings:
    """What one bench run measures; each field is the command-line option of the same name.

    source: the model's weights (its frame_size must stay None: the bench runs at each of
    ``frame_sizes``); models: instead, these configs of ``stae_ref/models/`` ("all": every one),
    each with its own weights (committed checkpoint, or ``source.seed``'s random ones), and the
    paper's Table 2 for this machine; paper_config: with ``models``, each at the paper's
    configuration (``stae_deploy.benchmarks.bench_models.paper_config``) with ``source.seed``'s
    random weights, no quality. frame_sizes: (H, W) pixels each; steps are timed after
    ``warmup`` untimed ones; threads: intra-op threads of torch, onnxruntime and the matmul
    contenders; memory: measure peak RSS (off: ``--no-memory``); profile: onnxruntime's kernel
    time per op type; work_dir: build the artifacts here and keep them (None: a temporary
    folder); force: overwrite existing output files and work-folder artifacts.
    """

    frame_sizes: tuple[tuple[int, int], ...]
    source: ModelSource = field(default_factory=ModelSource)
    models: tuple[str, ...] = ()
    paper_config: bool = False
    batch: int = 1
    steps: int = 20
    warmup: int = 3
    threads: int = os.cpu_count() or 1
    backends: tuple[str, ...] = tuple(BACKENDS)
    memory: bool = True
    profile: bool = False
    work_dir: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_sizes", tuple(tuple(size) for size in self.frame_sizes))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "backends", tuple(self.backends))
        for option, value, minimum in (("batch", self.batch, 1), ("steps", self.steps, 1),
                                       ("warmup", self.warmup, 0), ("threads", self.threads, 1)):
            if value < minimum:
                raise ConfigError(f"--{option}: expected an integer >= {minimum}, got {value}")
        if not self.frame_sizes:
            raise ConfigError("--frame-sizes: give at least one frame size")
        if not self.backends or set(self.backends) - set(BACKENDS) \
                or len(set(self.backends)) != len(self.backends):
            raise ConfigError(f"--backends: expected some of {list(BACKENDS)}, each once, "
                              f"got {list(self.backends)}")
        if self.source.frame_size is not None:
            raise ConfigError("--frame-size: the bench runs at each of --frame-sizes; give them "
                              "there")
        if self.models:
            if self.source.checkpoint or self.source.config:
                raise ConfigError("--models: each model brings its own weights; drop "
                                  "--checkpoint/--config")
            selected_models(self.models)
        elif self.paper_config:
            raise ConfigError("--paper-config: it sets the configs of --models; give --models "
                              "all or model names")

    def model_sources(self, folder: Path) -> list[tuple[str | None, ModelSource]]:
        """(name in ``stae_ref/models/`` or None, weights) of each model to bench, in order;
        with ``paper_config``, each model's config is written to ``folder``/NAME first."""
        if not self.models:
            return [(None, self.source)]
        if self.paper_config:
            return [(name, paper_config_source(name, self.source.seed, folder / name,
                                               self.force))
                    for name in selected_models(self.models)]
        return [(name, model_source(name, self.source.seed))
                for name in selected_models(self.models)]


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Bench every model of ``settings`` at every frame size; the report (see the module doc
    for the row fields), with ``table2`` when ``settings.models`` are compared."""
    print(f"matmul peak ({MATMUL_SIZE}x{MATMUL_SIZE} float32, {settings.threads} threads) ...",
          file=sys.stderr)
    matmul = matmul_gflops(settings.threads)
    rows: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    quality: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    with _work_folder(settings.work_dir) as folder:
        sources = settings.model_sources(Path(folder))
        for index, (name, source) in enumerate(sources, start=1):
            model, provenance = load_model(source)
            label = name or model_label(source, provenance)
            config = model.config
            print(f"model {index}/{len(sources)}: {label} ({config.layers} layers x "
                  f"{config.hidden} channels, patch {config.patch}, {config.stride2_stages} "
                  f"stride-2 stages, cell {config.cell})", file=sys.stderr)
            params[label] = sum(p.numel() for p in model.parameters())
            trained = None if settings.paper_config else name    # paper_config: random weights
            quality[label] = held_out_quality(trained) if trained else None
            paired[label] = paired_psnr_vs_stae(trained) if trained else None
            model_folder = Path(folder) / name if name else Path(folder)
            for size in settings.frame_sizes:
                rows += bench_frame_size(model, provenance, _at_frame_size(model.config, size),
                                         model_folder, settings, matmul["best"], label)
    report = {"model": ", ".join(params), "threads": settings.threads, "machine": machine(),
              "matmul_gflops": matmul,
              "settings": {"frame_sizes": [list(size) for size in settings.frame_sizes],
                           "paper_config": settings.paper_config, "batch": settings.batch,
                           "steps": settings.steps, "warmup": settings.warmup,
                           "backends": list(settings.backends), "clip": CLIP,
                           "matmul_size": MATMUL_SIZE},
              "rows": rows}
    if settings.models:
        report["table2"] = comparison_rows(rows, params, quality, paired)
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report's rows as a markdown table, after Table 2 when the report has one."""
    table = markdown_table(report)
    if "table2" not in report:
        return table
    labels = [BACKENDS[key].label for key in report["settings"]["backends"]]
    paper_config = report["settings"]["paper_config"]
    at = " at the paper's configuration" if paper_config else ""
    return comparison_markdown(report["table2"], labels,
                               f"Table 2{at} on {report['machine']['cpu']} "
                               f"({report['threads']} threads)", paper_config) + "\n" + table


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
                               "latent_shape": list(config.latent_shape),
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


def model_label(source: ModelSource, provenance: dict[str, Any]) -> str:
    """The checkpoint's file name, or where a random model's config came from and its seed."""
    if source.checkpoint:
        return Path(source.checkpoint).name
    config = Path(source.config).name if source.config else "paper config"
    return f"{config}, seed {provenance['random_seed']}"


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
