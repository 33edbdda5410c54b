"""One ``stae run``: a deployed model (ONNX or TensorRT engine) over one or more video sources
batched through it, each stream's video, per-step metrics and latency plot written.

With one source the output paths are used as given; with N, stream i writes ``stem.i.ext``
(``out.mp4`` -> ``out.0.mp4``, ``out.1.mp4``, ...). Torch-free.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from stae_deploy.runtime.artifact import ONNX_SUFFIX
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_line_plot
from stae_deploy.runtime.predictor import Predictor, StepModel
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.event_clips import EventClipSettings, EventClipWriter
from stae_deploy.runtime.event_log import SurpriseEventLog
from stae_deploy.runtime.live_view import LiveView, ViewSettings
from stae_deploy.runtime.streaming import (RunOptions, RunSummary, StepObserver, StreamOutputs,
                                           Throughput, run_streams)


@dataclass(frozen=True)
class StreamFiles:
    """The files of one stream (None: not written): video (actual | predicted | error heat-map),
    metrics (one JSON line per step) and latency_plot (PNG of per-step ms)."""

    video: Path | None = None
    metrics: Path | None = None
    latency_plot: Path | None = None

    def existing(self) -> list[Path]:
        """The files that exist on disk (those written)."""
        return [path for path in (self.video, self.metrics, self.latency_plot)
                if path is not None and path.exists()]


@dataclass(frozen=True)
class RunOutputs:
    """Output files of a run, named as for one stream (see the module doc for several); None:
    not written. events: one file for every stream's surprise events. force: overwrite existing
    files (otherwise they are refused before the run)."""

    video: str | None = None
    metrics: str | None = None
    latency_plot: str | None = None
    events: str | None = None            # every stream's surprise events, one JSON-lines file
    event_clips: EventClipSettings | None = None    # a short video around each event
    force: bool = False

    def of_stream(self, index: int, streams: int) -> StreamFiles:
        """Stream ``index``'s files among ``streams``; raises OutputExistsError for an existing
        one unless ``force``."""
        def path(given: str | None) -> Path | None:
            if given is None:
                return None
            base = Path(given)
            named = base if streams == 1 else base.with_name(f"{base.stem}.{index}{base.suffix}")
            return refuse_overwrite(named, self.force)

        return StreamFiles(path(self.video), path(self.metrics), path(self.latency_plot))

    def refuse_existing(self, streams: int) -> None:
        """Raise OutputExistsError for any output file of ``streams`` streams that exists
        (unless ``force``): before a model is loaded or a server contacted."""
        for index in range(streams):
            self.of_stream(index, streams)
        if self.events is not None:
            refuse_overwrite(Path(self.events), self.force)
        if self.event_clips is not None:
            self.event_clips.refuse_existing()


@dataclass(frozen=True)
class ModelRunConfig:
    """model: an ONNX file or a TensorRT engine (.engine/.plan/.trt beside its .json sidecar).
    sources: one :class:`SourceConfig` per stream (at least one). options: the streaming loop's
    :class:`RunOptions`; its single-stream ``video``/``metrics`` must stay None (``outputs``
    names every stream's files). provider: onnxruntime execution provider (ONNX models).
    threads: onnxruntime CPU threads (None: its default). cuda_graphs: replay CUDA graphs
    (TensorRT engines). max_batch: most streams per batched step (None: all that have a frame).
    """

    model: str
    sources: tuple[SourceConfig, ...]
    options: RunOptions = field(default_factory=RunOptions)
    outputs: RunOutputs = field(default_factory=RunOutputs)
    provider: str = "cpu"
    threads: int | None = None
    cuda_graphs: bool = False
    max_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ConfigError("sources: give at least one input source")
        if self.options.video is not None or self.options.metrics is not None:
            raise ConfigError("options: video/metrics name one stream's files; give them in "
                              "outputs, which names every stream's")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected None or >= 1, got {self.threads}")


@dataclass(frozen=True)
class ModelRunResult:
    """Per stream, in the order of the sources: its summary (``error`` says why a source ended
    early) and its files; plus the batched steps' combined throughput."""

    summaries: list[RunSummary]
    files: list[StreamFiles]
    throughput: Throughput
    event_clips: list[Path] = field(default_factory=list)


def _stderr_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run_model(config: ModelRunConfig, progress: bool = True,
              log: Callable[[str], None] = _stderr_log,
              view: ViewSettings | None = None) -> ModelRunResult:
    """Load ``config.model`` and :func:`run_sources` through it. Existing output files are
    refused before the model is loaded. ``progress``: a progress bar on stderr."""
    config.outputs.refuse_existing(len(config.sources))
    predictor = Predictor.load(config.model, config.provider, config.threads, config.cuda_graphs,
                               config.max_batch)
    backend = config.provider if Path(config.model).suffix == ONNX_SUFFIX else "tensorrt"
    return run_sources(predictor, f"model {config.model} on {backend}", config.sources,
                       config.options, config.outputs, progress, log, view)


def run_sources(model: StepModel, description: str, sources: Sequence[SourceConfig],
                options: RunOptions, outputs: RunOutputs, progress: bool = True,
                log: Callable[[str], None] = _stderr_log,
                view: ViewSettings | None = None) -> ModelRunResult:
    """Drive every source through ``model`` (local, or served: ``description`` says which, for
    the log) until each ends, fails or reaches ``options.max_frames`` (or Ctrl-C), and write
    each stream's files (``outputs``; existing ones are refused before anything runs). ``view``:
    serve the live web view (``stae_deploy.runtime.live_view``) while the run lasts."""
    streams = len(sources)
    files = [outputs.of_stream(i, streams) for i in range(streams)]
    events = refuse_overwrite(Path(outputs.events), outputs.force) if outputs.events else None
    uris = [source.uri for source in sources]
    height, width = model.frame_hw
    log(f"{description} ({model.metadata.precision}, {height}x{width}, up to "
        f"{model.max_batch or 'any number of'} stream(s) per step); "
        f"input {', '.join(source.uri for source in sources)}")
    max_frames = options.max_frames
    with ExitStack() as stack:
        observers: list[StepObserver] = []
        live = stack.enter_context(LiveView(view, uris, options.surprise.threshold,
                                                 model.frame_hw)) \
            if view is not None else None
        if live is not None:
            observers.append(live)
            log(f"live view: {live.url} (metrics: {live.url}metrics, health: {live.url}healthz)")
        event_log = SurpriseEventLog(events, uris) if events is not None else None
        if event_log is not None:
            observers.append(event_log)
            stack.push(lambda failed, *_: event_log.close(completed=failed is None))
        clips = EventClipWriter(outputs.event_clips, streams) \
            if outputs.event_clips is not None else None
        if clips is not None:
            observers.append(clips)
            stack.callback(clips.close)
        grabbers = [stack.enter_context(FrameGrabber(source, log=log)) for source in sources]
        if live is not None:
            live.watch_sources(grabbers)
        total = sum(max_frames or g.frame_count for g in grabbers) \
            if max_frames or all(g.frame_count for g in grabbers) else None
        bar = stack.enter_context(tqdm(total=total, unit="frame", disable=not progress,
                                       desc="stae run"))

        def on_step(index: int, summary: RunSummary, record: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(stream=index, infer_ms=f"{record['infer_ms']:.0f}",
                            dropped=record["dropped_frames"],
                            psnr=f"{record.get('psnr_db', float('nan')):.1f}")

        summaries, throughput = run_streams(
            model, grabbers, options, [StreamOutputs(f.video, f.metrics) for f in files],
            on_step=on_step, log=log, observers=observers)
    for source, summary, stream_files in zip(sources, summaries, files):
        if stream_files.latency_plot is not None:
            save_line_plot(stream_files.latency_plot,
                           {"inference (ms)": summary.infer_ms,
                            "capture to prediction (ms)": summary.latency_ms},
                           "step", "ms", f"stae run: latency per step ({source.uri})")
    return ModelRunResult(summaries, files, throughput, clips.clips if clips else [])
