"""Prometheus metrics of a ``stae run`` (``/metrics`` of its live view), in one registry.

Names and units follow Prometheus conventions; every series has a ``stream`` label (the stream's
index in the run; ``stae_stream_info`` maps it to its source):

    stae_step_latency_seconds          histogram  inference time of each step
    stae_capture_to_prediction_seconds histogram  from the frame's capture to its prediction
    stae_frames_total                  counter    frames processed
    stae_dropped_frames_total          counter    frames a live source dropped (the model was busy)
    stae_source_reconnects_total       counter    source reconnects
    stae_state_resets_total            counter    state resets (source reconnects, loops)
    stae_nonfinite_resets_total        counter    resets after NaN/Inf
    stae_state_losses_total            counter    states lost by a serving host
    stae_surprise_events_total         counter    surprise events
    stae_state_out_of_range_steps_total counter   steps whose state left its recorded range
    stae_surprise_score                gauge      the last frame's surprise score
    stae_gain_over_copy_last_db        gauge      rolling PSNR gain over copy-last (last 100 scored frames)
    stae_stream_healthy                gauge      1 while the stream is healthy (see /healthz)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily, Metric)

if TYPE_CHECKING:
    from stae_deploy.runtime.live_view_state import StreamSnapshot

LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# the run's totals: key (RunSummary's field, "frames" for steps) -> (metric name, help)
COUNTERS = {
    "frames": ("stae_frames", "frames processed"),
    "dropped_frames": ("stae_dropped_frames", "frames a live source dropped"),
    "reconnects": ("stae_source_reconnects", "source reconnects"),
    "resets": ("stae_state_resets", "state resets (source reconnects, loops)"),
    "nonfinite_resets": ("stae_nonfinite_resets", "state resets after NaN/Inf"),
    "state_losses": ("stae_state_losses", "states lost by a serving host"),
    "surprise_events": ("stae_surprise_events", "surprise events"),
    "out_of_range_steps": ("stae_state_out_of_range_steps",
                           "steps whose state left its recorded range (the range guard)"),
}


class RunMetrics:
    """The run's metrics, read from the streams' snapshots at each scrape (:meth:`text`).

    ``snapshot(i)``: stream i's :class:`StreamSnapshot`; ``healthy(i)``: its health (see
    ``/healthz``); ``gain_db(snapshot)``: its rolling gain over copy-last, dB, or None."""

    def __init__(self, sources: Sequence[str], snapshot: Callable[[int], StreamSnapshot],
                 healthy: Callable[[int], bool],
                 gain_db: Callable[[StreamSnapshot], float | None]):
        self.sources = list(sources)
        self._snapshot, self._healthy, self._gain_db = snapshot, healthy, gain_db
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)           # a custom collector: collect() below

    def collect(self) -> Iterator[Metric]:
        """Every metric family, every stream's samples (prometheus_client's collector API)."""
        info = InfoMetricFamily("stae_stream", "the source of each stream", labels=["stream"])
        latency = HistogramMetricFamily("stae_step_latency_seconds",
                                        "inference time of each step", labels=["stream"])
        capture = HistogramMetricFamily("stae_capture_to_prediction_seconds",
                                        "time from a frame's capture to its prediction",
                                        labels=["stream"])
        counters = {key: CounterMetricFamily(name, help_text, labels=["stream"])
                    for key, (name, help_text) in COUNTERS.items()}
        surprise = GaugeMetricFamily("stae_surprise_score", "the last frame's surprise score",
                                     labels=["stream"])
        gain = GaugeMetricFamily("stae_gain_over_copy_last_db",
                                 "rolling PSNR gain over copy-last, dB", labels=["stream"])
        healthy = GaugeMetricFamily("stae_stream_healthy", "1 while the stream is healthy",
                                    labels=["stream"])
        for index, source in enumerate(self.sources):
            stream, shot = str(index), self._snapshot(index)
            info.add_metric([stream], {"source": source})
            latency.add_metric([stream], _cumulative(shot.latency_buckets), shot.latency_sum_s)
            capture.add_metric([stream], _cumulative(shot.capture_buckets), shot.capture_sum_s)
            for key, family in counters.items():
                family.add_metric([stream], shot.totals[key])
            if shot.surprise is not None:
                surprise.add_metric([stream], shot.surprise)
            if (gain_db := self._gain_db(shot)) is not None:
                gain.add_metric([stream], gain_db)
            healthy.add_metric([stream], 1.0 if self._healthy(index) else 0.0)
        yield from (info, latency, capture, *counters.values(), surprise, gain, healthy)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last: above every edge) -> Prometheus' cumulative buckets."""
    buckets, total = [], 0
    for edge, count in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], counts):
        total += count
        buckets.append((edge, float(total)))
    return buckets
