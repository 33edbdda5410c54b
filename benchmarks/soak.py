"""Soak test: many batched steps with stream churn and NaN injection; memory must stay flat.

    python -m stae_deploy.benchmarks.soak MODEL.onnx [--steps 10000] [--streams 2]
        [--sample-every 100] [--warmup-steps 500] [--reset-every 500] [--churn-every 1000]
        [--nan-every 2000] [--threads N] [--provider cpu] [--json F] [--plot F] [--force]

MODEL must have a dynamic batch (``stae export --dynamic-batch``). ``--streams`` slots each hold
one stream watching real footage (carphone, city, motion in turn, cycled; a clip's end wraps to
its start). One step is one ``Predictor.step_many`` of the streams active at that step, with churn:

* sitting out: slot k >= 1 skips the steps where step % (5 + 2k) == k (slot 0 never does, so
  every step has a stream and the batch size keeps changing);
* reset: at steps 250, 750, ... (``--reset-every`` / 2 + i * ``--reset-every``) one slot's
  stream resets (slots in turn);
* leave and join: at steps 1000, 2000, ... one slot's stream leaves (``Stream.close``) and a new
  stream, on the next footage, takes its place;
* NaN: at steps 1500, 3500, ... (3/4 of ``--nan-every``, then every ``--nan-every``) one element
  of one state tensor (tensors in turn, a seeded element) of one active stream is set to NaN
  (``stream.state()`` -> ``load_state``); that step must return a NonFiniteStateError for exactly
  that stream and arrays for the others, and no other step may return one.

Resident memory (VmRSS of /proc/self/status, MiB) is sampled before the first step, every
``--sample-every`` steps, after the warm-up and at the end, with the median step ms since the
previous sample. Reported: RSS after warm-up and at the end, the growth after warm-up in %
(target < 2 %), the max, a least-squares slope (MiB per 1000 steps after warm-up), the median
step ms and the counts of each event. Progress goes to stderr, a summary to stdout; ``--json``
and ``--plot`` (PNG: RSS and step ms vs step, warm-up boundary marked) write files, refusing to
overwrite without ``--force``. Exit code 1 if the growth after warm-up is >= 2 % or a NaN was not
caught as expected; 2 for a usage error.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.runtime.backends.onnxruntime_backend import PROVIDERS
from stae_deploy.runtime.errors import ConfigError, NonFiniteStateError, exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_figure
from stae_deploy.runtime.machine import machine_info, rss_mb
from stae_deploy.runtime.predictor import Predictor, Stream
from stae_deploy.runtime.protocol import DYNAMIC_BATCH
from stae_deploy.stae_ref.footage import load_clips

CLIP_ORDER = ("carphone", "city", "motion")     # stream serial j watches CLIP_ORDER[j % 3]
START_STRIDE = 37                               # frames between starts of streams on one clip
GROWTH_LIMIT_PERCENT = 2.0
SEED = 0


# --- the schedule (pure) ---------------------------------------------------------------------

def fires(step: int, every: int, phase: int) -> bool:
    """Whether an event due at steps ``phase``, ``phase + every``, ... happens at ``step``
    (``every`` <= 0: never)."""
    return every > 0 and step >= phase and (step - phase) % every == 0


def reset_phase(every: int) -> int:
    """First reset step: half a period in (250 for every 500)."""
    return max(every // 2, 1)


def churn_phase(every: int) -> int:
    """First leave/join step: one period in (1000 for every 1000)."""
    return max(every, 1)


def nan_phase(every: int) -> int:
    """First NaN step: three quarters of a period in (1500 for every 2000), off the other grids."""
    return max(3 * every // 4, 1)


def sits_out(slot: int, step: int) -> bool:
    """Whether the stream in ``slot`` has no frame at ``step``: slot 0 always has one; slot k
    misses one step in 5 + 2k (a slower camera)."""
    return slot > 0 and step % (5 + 2 * slot) == slot


def stream_start(serial: int, length: int) -> int:
    """Start frame of the stream with serial number ``serial`` in its clip of ``length`` frames
    (streams on the same clip start ``START_STRIDE`` frames apart)."""
    return (serial // len(CLIP_ORDER)) * START_STRIDE % length


def nan_check(results: Sequence[object], target: int) -> list[str]:
    """What is wrong with ``results`` (one per active stream) of a step where the stream at
    index ``target`` got a NaN: it must be a NonFiniteStateError and every other one not."""
    problems = []
    for i, result in enumerate(results):
        failed = isinstance(result, NonFiniteStateError)
        if i == target and not failed:
            problems.append(f"result {i} (NaN injected) is a {type(result).__name__}, "
                            f"not a NonFiniteStateError")
        elif i != target and failed:
            problems.append(f"result {i} (no NaN) is a NonFiniteStateError: {result}")
    return problems


def growth_percent(start_mb: float, end_mb: float) -> float:
    """Growth from ``start_mb`` to ``end_mb`` in % of ``start_mb``."""
    return (end_mb - start_mb) / start_mb * 100.0


def slope_mb_per_1k_steps(steps: Sequence[int], rss_mb: Sequence[float]) -> float | None:
    """Least-squares slope of RSS (MiB) over steps, per 1000 steps (None under 2 points)."""
    if len(steps) < 2 or len(set(steps)) < 2:
        return None
    return float(np.polyfit(np.asarray(steps, float), np.asarray(rss_mb, float), 1)[0] * 1e3)


def sample_steps(steps: int, sample_every: int, warmup_steps: int) -> set[int]:
    """Step counts (steps done) at which RSS is sampled: 0, every ``sample_every``, the end of
    the warm-up and the end."""
    return {0, warmup_steps, steps} | set(range(sample_every, steps + 1, sample_every))


@dataclass(frozen=True)
class SoakSchedule:
    """How long to soak and what happens on the way (see the module doc for the event grid).

    steps:        step_many calls in all (>= 1).
    streams:      stream slots (>= 1).
    sample_every: steps between RSS samples (>= 1).
    warmup_steps: growth is measured from the end of these steps (0 .. steps - 1).
    reset_every, churn_every, nan_every: steps between resets, leave+joins and NaN injections
                  (<= 0: never).
    """

    steps: int = 10000
    streams: int = 2
    sample_every: int = 100
    warmup_steps: int = 500
    reset_every: int = 500
    churn_every: int = 1000
    nan_every: int = 2000

    def __post_init__(self) -> None:
        for name in ("steps", "streams", "sample_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ConfigError(f"warmup_steps: expected 0 to steps - 1 ({self.steps - 1}), "
                              f"got {self.warmup_steps}")


# --- measuring -------------------------------------------------------------------------------

@dataclass
class Slot:
    """The stream in one slot, which footage it watches and how many frames it has had."""

    stream: Stream
    serial: int
    clip: str
    start: int
    frames_fed: int = 0

    def next_frame(self, clips: dict[str, np.ndarray]) -> np.ndarray:
        """This stream's next frame (3, H, W) float32 (not yet counted as fed)."""
        frames = clips[self.clip]
        return frames[(self.start + self.frames_fed) % len(frames)]


@dataclass
class Soak:
    """The running soak: slots, counts, events, samples and problems."""

    predictor: Predictor
    clips: dict[str, np.ndarray]
    slots: list[Slot] = field(default_factory=list)
    serials: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {
        "resets": 0, "leaves": 0, "joins": 0, "nan_injected": 0, "nan_caught": 0,
        "unexpected_nonfinite": 0})
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(SEED))

    def join(self) -> Slot:
        """A new stream on the next footage (serial numbers count every stream ever made)."""
        serial, self.serials = self.serials, self.serials + 1
        clip = CLIP_ORDER[serial % len(CLIP_ORDER)]
        return Slot(self.predictor.new_stream(), serial, clip,
                    stream_start(serial, len(self.clips[clip])))

    def churn(self, step: int, slot: int) -> None:
        """The stream in ``slot`` leaves (closed) and a new one joins in its place."""
        old = self.slots[slot]
        old.stream.close()
        self.slots[slot] = self.join()
        self.counts["leaves"] += 1
        self.counts["joins"] += 1
        self.events.append({"step": step, "kind": "leave+join", "slot": slot,
                            "left": old.serial, "joined": self.slots[slot].serial})

    def reset(self, step: int, slot: int) -> None:
        """The stream in ``slot`` resets (a scene cut)."""
        self.slots[slot].stream.reset()
        self.counts["resets"] += 1
        self.events.append({"step": step, "kind": "reset", "slot": slot,
                            "serial": self.slots[slot].serial})

    def inject_nan(self, step: int, slot: int) -> str:
        """One seeded element of one state tensor (tensors in turn) of ``slot``'s stream -> NaN;
        returns the tensor name."""
        stream = self.slots[slot].stream
        state = stream.state()
        name = sorted(state)[self.counts["nan_injected"] % len(state)]
        flat = state[name].reshape(-1)
        element = int(self.rng.integers(flat.size))
        flat[element] = np.nan
        stream.load_state(state)
        self.counts["nan_injected"] += 1
        self.events.append({"step": step, "kind": "nan", "slot": slot,
                            "serial": self.slots[slot].serial, "tensor": name,
                            "element": element})
        return name

    def step(self, step: int, active: list[int], nan_slot: int | None) -> float:
        """One step_many of the ``active`` slots; checks the NaN outcome; returns its ms."""
        frames = [self.slots[s].next_frame(self.clips) for s in active]
        streams = [self.slots[s].stream for s in active]
        before = [stream.nonfinite_resets for stream in streams]
        start = time.perf_counter()
        results = self.predictor.step_many(streams, frames)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        for s in active:
            self.slots[s].frames_fed += 1
        target = active.index(nan_slot) if nan_slot is not None else -1
        problems = nan_check(results, target)
        failed = [isinstance(r, NonFiniteStateError) for r in results]
        if nan_slot is not None and failed[target]:
            self.counts["nan_caught"] += 1
            if streams[target].nonfinite_resets != before[target] + 1:
                problems.append(f"stream {target}: nonfinite_resets did not go up by one")
        self.counts["unexpected_nonfinite"] += sum(f for i, f in enumerate(failed) if i != target)
        for problem in problems:
            message = f"step {step}: {problem} (active slots {active})"
            self.problems.append(message)
            tqdm.write(f"soak: NaN CHECK FAILED: {message}", file=sys.stderr)
        return elapsed_ms


def soak(predictor: Predictor, clips: dict[str, np.ndarray], schedule: SoakSchedule
         ) -> dict[str, Any]:
    """Run ``schedule`` on streams watching ``clips`` (name -> (K, 3, H, W) float32); returns
    samples (steps, rss_mb, step_ms), counts, events, problems."""
    run = Soak(predictor, clips)
    run.slots = [run.join() for _ in range(schedule.streams)]
    at = sample_steps(schedule.steps, schedule.sample_every, schedule.warmup_steps)
    samples: list[dict[str, Any]] = [{"step": 0, "rss_mb": round(rss_mb(), 2), "step_ms": None}]
    window_ms: list[float] = []
    all_ms: list[float] = []
    resets = churns = nans = 0
    progress = tqdm(range(schedule.steps), desc="soak", unit="step", mininterval=1.0,
                    file=sys.stderr)
    for step in progress:
        if fires(step, schedule.churn_every, churn_phase(schedule.churn_every)):
            run.churn(step, churns % schedule.streams)
            churns += 1
        if fires(step, schedule.reset_every, reset_phase(schedule.reset_every)):
            run.reset(step, resets % schedule.streams)
            resets += 1
        active = [s for s in range(schedule.streams) if not sits_out(s, step)]
        nan_slot = None
        if fires(step, schedule.nan_every, nan_phase(schedule.nan_every)):
            nan_slot = active[nans % len(active)]
            run.inject_nan(step, nan_slot)
            nans += 1
        elapsed_ms = run.step(step, active, nan_slot)
        window_ms.append(elapsed_ms)
        all_ms.append(elapsed_ms)
        if step + 1 in at:
            samples.append({"step": step + 1, "rss_mb": round(rss_mb(), 2),
                            "step_ms": round(statistics.median(window_ms), 3)})
            window_ms = []
            progress.set_postfix(rss_mb=f"{samples[-1]['rss_mb']:.1f}",
                                 step_ms=f"{samples[-1]['step_ms']:.1f}", refresh=False)
    progress.close()
    for slot in run.slots:
        slot.stream.close()
    return {"samples": samples, "step_ms_median": statistics.median(all_ms),
            "counts": run.counts, "events": run.events, "problems": run.problems}


def summarize(result: dict[str, Any], warmup_steps: int) -> dict[str, Any]:
    """RSS after warm-up / at the end / max (MiB), growth % and slope after warm-up, median ms,
    the event counts, and whether it passed (with the reasons when not)."""
    samples = result["samples"]
    after = next(s for s in samples if s["step"] == warmup_steps)
    tail = [s for s in samples if s["step"] >= warmup_steps]
    growth = growth_percent(after["rss_mb"], samples[-1]["rss_mb"])
    slope = slope_mb_per_1k_steps([s["step"] for s in tail], [s["rss_mb"] for s in tail])
    failures = list(result["problems"])
    if growth >= GROWTH_LIMIT_PERCENT:
        failures.insert(0, f"RSS grew {growth:.2f} % after warm-up "
                           f"(limit {GROWTH_LIMIT_PERCENT:g} %)")
    counts = result["counts"]
    if counts["nan_caught"] != counts["nan_injected"]:
        failures.append(f"{counts['nan_injected'] - counts['nan_caught']} of "
                        f"{counts['nan_injected']} injected NaN(s) not caught")
    return {"rss_mb_start": samples[0]["rss_mb"], "rss_mb_after_warmup": after["rss_mb"],
            "rss_mb_end": samples[-1]["rss_mb"],
            "rss_mb_max": max(s["rss_mb"] for s in samples),
            "growth_percent_after_warmup": round(growth, 3),
            "growth_limit_percent": GROWTH_LIMIT_PERCENT,
            "rss_slope_mb_per_1k_steps_after_warmup": None if slope is None else round(slope, 4),
            "step_ms_median": round(result["step_ms_median"], 3),
            **counts, "passed": not failures, "failures": failures}


def save_plot(path: Path, samples: Sequence[dict[str, Any]], warmup_steps: int,
              title: str) -> Path:
    """PNG of two panels sharing the step axis: RSS (MiB) with the +2 % line over the after-warm-up
    value, and the median step ms per sample window; the warm-up boundary marked in both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), dpi=110, sharex=True)
    top.plot([s["step"] for s in samples], [s["rss_mb"] for s in samples], marker=".",
             linewidth=1.4, label="RSS (VmRSS)")
    after = next(s["rss_mb"] for s in samples if s["step"] == warmup_steps)
    top.axhline(after * (1 + GROWTH_LIMIT_PERCENT / 100), color="tab:red", linestyle=":",
                linewidth=1, label=f"+{GROWTH_LIMIT_PERCENT:g} % over after warm-up")
    timed = [s for s in samples if s["step_ms"] is not None]
    bottom.plot([s["step"] for s in timed], [s["step_ms"] for s in timed], marker=".",
                linewidth=1.2, color="tab:green", label="median step ms (window)")
    for axes, label in ((top, "RSS MiB"), (bottom, "step ms")):
        axes.axvline(warmup_steps, color="gray", linestyle="--", linewidth=1,
                     label=f"end of warm-up (step {warmup_steps})")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    top.set_title(title)
    bottom.set_xlabel("step")
    bottom.set_ylim(bottom=0)
    return save_figure(figure, path)


def open_predictor(model: str, provider: str, threads: int | None) -> Predictor:
    """The model's Predictor; ConfigError unless its batch is dynamic."""
    predictor = Predictor.load(model, provider=provider, threads=threads)
    if predictor.spec.batch != DYNAMIC_BATCH:
        raise ConfigError(f"{model}: the model's batch is fixed at {predictor.spec.batch}, so "
                          f"streams cannot be batched; export it with `stae export "
                          f"--dynamic-batch` and pass that file")
    return predictor


def run(model: str, schedule: SoakSchedule, provider: str = "cpu", threads: int | None = None,
        json_path: Path | None = None, plot_path: Path | None = None, force: bool = False) -> int:
    """Soak ``model`` on ``provider`` with ``threads`` intra-op threads (None: onnxruntime's
    default), print the summary, write the files given (refusing to overwrite unless ``force``);
    returns the exit code (0 passed, 1 not)."""
    outputs = {key: refuse_overwrite(value, force) for key, value in
               (("json", json_path), ("plot", plot_path)) if value}
    predictor = open_predictor(model, provider, threads)
    clips = load_clips(CLIP_ORDER, predictor.frame_hw)
    started = time.perf_counter()
    result = soak(predictor, clips, schedule)
    summary = summarize(result, schedule.warmup_steps)
    report = {"model": Path(model).name, "model_path": str(Path(model).resolve()),
              "frame_hw": list(predictor.frame_hw),
              "machine": machine_info(provider=provider,
                                      threads=threads or "onnxruntime default"),
              "settings": asdict(schedule) | {"clips": list(CLIP_ORDER), "seed": SEED},
              "wall_s": round(time.perf_counter() - started, 1),
              "summary": summary, "samples": result["samples"], "events": result["events"]}
    width = max(map(len, summary))
    for key, value in summary.items():
        if key != "failures":
            print(f"{key.ljust(width)}  {value}")
    for failure in summary["failures"]:
        print(f"FAIL: {failure}")
    if "json" in outputs:
        write_text(outputs["json"], json.dumps(report, indent=2) + "\n")
    if "plot" in outputs:
        save_plot(outputs["plot"], result["samples"], schedule.warmup_steps,
                  f"soak: {report['model']}, {schedule.streams} stream slot(s), "
                  f"{schedule.steps} steps; "
                  f"growth after warm-up {summary['growth_percent_after_warmup']:+.2f} %")
    for path in outputs.values():
        print(f"wrote {path}", file=sys.stderr)
    return 0 if summary["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc): 0 passed, 1 failed, 2 on a user error."""
    defaults = SoakSchedule()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX export with a dynamic batch")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--streams", type=int, default=defaults.streams, help="stream slots")
    parser.add_argument("--sample-every", type=int, default=defaults.sample_every,
                        help="steps between RSS samples")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                        help="growth is measured from the end of these steps")
    parser.add_argument("--reset-every", type=int, default=defaults.reset_every,
                        help="0: no resets")
    parser.add_argument("--churn-every", type=int, default=defaults.churn_every,
                        help="0: no leave/join")
    parser.add_argument("--nan-every", type=int, default=defaults.nan_every,
                        help="0: no NaN injection")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: one per physical core)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu",
                        help="onnxruntime execution provider")
    parser.add_argument("--json", type=Path,
                        help="write the report (summary, samples, events) here")
    parser.add_argument("--plot", type=Path, help="write a PNG of RSS and step ms vs step here")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)

    def soak_and_report() -> int:
        schedule = SoakSchedule(
            steps=args.steps, streams=args.streams, sample_every=args.sample_every,
            warmup_steps=args.warmup_steps, reset_every=args.reset_every,
            churn_every=args.churn_every, nan_every=args.nan_every)
        return run(args.model, schedule, args.provider, args.threads, args.json, args.plot,
                   args.force)

    return exit_code_of("soak", soak_and_report)


if __name__ == "__main__":
    sys.exit(main())
