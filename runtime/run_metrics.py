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

from typing import Any, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RunMetrics:
    """The run's metrics; :meth:`observe` after each stream step, :meth:`text` for a scrape."""

    def __init__(self, sources: Sequence[str]):
        self.registry = CollectorRegistry()
        labels = ["stream"]
        registry = self.registry
        self.info = Info("stae_stream", "the source of each stream", labels, registry=registry)
        self.latency = Histogram("stae_step_latency_seconds", "inference time of each step",
                                 labels, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.capture_latency = Histogram(
            "stae_capture_to_prediction_seconds", "time from a frame's capture to its prediction",
            labels, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.counters = {
            key: Counter(name, help_text, labels, registry=registry) for key, name, help_text in (
                ("frames", "stae_frames", "frames processed"),
                ("dropped_frames", "stae_dropped_frames", "frames a live source dropped"),
                ("reconnects", "stae_source_reconnects", "source reconnects"),
                ("resets", "stae_state_resets", "state resets (source reconnects, loops)"),
                ("nonfinite_resets", "stae_nonfinite_resets", "state resets after NaN/Inf"),
                ("state_losses", "stae_state_losses", "states lost by a serving host"),
                ("surprise_events", "stae_surprise_events", "surprise events"),
                ("out_of_range_steps", "stae_state_out_of_range_steps",
                 "steps whose state left its recorded range (the range guard)"))}
        self.surprise = Gauge("stae_surprise_score", "the last frame's surprise score", labels,
                              registry=registry)
        self.gain = Gauge("stae_gain_over_copy_last_db",
                          "rolling PSNR gain over copy-last, dB", labels, registry=registry)
        self.healthy = Gauge("stae_stream_healthy", "1 while the stream is healthy", labels,
                             registry=registry)
        self._totals: list[dict[str, int]] = [dict.fromkeys(self.counters, 0) for _ in sources]
        for index, source in enumerate(sources):
            stream = str(index)
            self.info.labels(stream).info({"source": source})
            for counter in self.counters.values():
                counter.labels(stream)                    # every series exists from the start
            self.healthy.labels(stream).set(1)

    def observe(self, index: int, record: dict[str, Any], totals: dict[str, int],
                gain_db: float | None, healthy: bool) -> None:
        """One step of stream ``index``: its metrics ``record`` (ms), its running ``totals``
        (counter name -> count so far), its rolling gain (dB) and health."""
        stream = str(index)
        self.latency.labels(stream).observe(record["infer_ms"] / 1e3)
        self.capture_latency.labels(stream).observe(record["capture_to_prediction_ms"] / 1e3)
        seen = self._totals[index]
        for key, total in totals.items():
            if total > seen[key]:
                self.counters[key].labels(stream).inc(total - seen[key])
                seen[key] = total
        if record.get("surprise") is not None:
            self.surprise.labels(stream).set(record["surprise"])
        if gain_db is not None:
            self.gain.labels(stream).set(gain_db)
        self.healthy.labels(stream).set(1 if healthy else 0)

    def set_healthy(self, index: int, healthy: bool) -> None:
        self.healthy.labels(str(index)).set(1 if healthy else 0)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
