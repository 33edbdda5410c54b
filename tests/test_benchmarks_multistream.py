"""The pure helpers of the multistream_throughput and soak benchmark scripts: which frames each
stream sees, the churn schedule, the NaN check, the settings' checks, and the arithmetic of the
reports."""
from __future__ import annotations

import pytest

from stae_deploy.benchmarks import multistream_throughput as throughput
from stae_deploy.benchmarks import soak
from stae_deploy.runtime.errors import ConfigError, NonFiniteStateError

CLIP_LENGTHS = {"carphone": 120, "city": 116, "motion": 242}   # usable frames of each clip


# --- multistream_throughput ------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 4, 8, 9])
def test_no_two_streams_see_the_same_frame_in_a_round(count):
    sources = throughput.stream_sources(count, CLIP_LENGTHS)
    assert len(sources) == count
    assert [name for name, _ in sources[:3]] == ["carphone", "city", "motion"][:count]
    for round_index in range(400):      # past every clip's wrap
        seen = [(name, throughput.frame_index(start, round_index, CLIP_LENGTHS[name]))
                for name, start in sources]
        assert len(set(seen)) == count, f"round {round_index}: {seen}"


def test_streams_sharing_a_clip_are_spread_evenly():
    sources = throughput.stream_sources(8, CLIP_LENGTHS)
    assert [start for name, start in sources if name == "carphone"] == [0, 40, 80]
    assert [start for name, start in sources if name == "motion"] == [0, 121]


def test_frame_index_wraps():
    assert throughput.frame_index(0, 5, 120) == 5
    assert throughput.frame_index(100, 25, 120) == 5


def test_summarize_row():
    row = throughput.summarize(4, [100.0, 110.0, 90.0], [300.0, 330.0, 400.0])
    assert row["batched_round_ms_median"] == 100.0
    assert row["one_at_a_time_round_ms_median"] == 330.0
    assert row["batched_fps"] == 40.0                    # 4 frames per 0.1 s
    assert row["one_at_a_time_fps"] == pytest.approx(4 / 0.33, abs=0.01)
    assert row["speedup"] == 3.3
    assert row["speedup_paired"] == 3.0                  # median of 3.0, 3.0, 4.44
    assert row["batched_latency_ms"] == 100.0
    assert row["one_at_a_time_step_ms"] == 82.5
    assert row["one_at_a_time_last_stream_latency_ms"] == 330.0


def test_tables_have_a_row_per_stream_count():
    rows = [throughput.summarize(n, [10.0 * n], [12.0 * n]) for n in (1, 2, 4)]
    text = throughput.text_table(rows).splitlines()
    assert len(text) == 4 and "speed-up" in text[0] and "1.20x" in text[3]
    report = {"model": "m.onnx", "frame_hw": [128, 128], "rows": rows,
              "settings": {"rounds": 1, "warmup_rounds": 0},
              "machine": {"provider": "cpu", "threads": 2, "cpu": "X", "cpu_count": 2,
                          "cpus_available": 2, "onnxruntime": "1"}}
    markdown = throughput.markdown_table(report)
    assert markdown.count("\n| ") == 4 and "| 4 | 40.00 | 48.00 |" in markdown


def test_throughput_settings_name_what_cannot_work():
    settings = throughput.ThroughputSettings("m.onnx", streams=[1, 2])
    assert settings.streams == (1, 2) and (settings.rounds, settings.warmup) == (40, 3)
    for field, bad, message in (("streams", (1, 0), "streams: expected counts >= 1"),
                                ("streams", (), "streams: expected counts >= 1"),
                                ("rounds", 0, "rounds: expected >= 1, got 0"),
                                ("warmup", -1, "warmup: expected >= 0, got -1")):
        with pytest.raises(ConfigError, match=message):
            throughput.ThroughputSettings("m.onnx", **{field: bad})


# --- soak ------------------------------------------------------------------------------------

def test_fires_on_its_grid():
    assert [s for s in range(2000) if soak.fires(s, 500, soak.reset_phase(500))] == \
        [250, 750, 1250, 1750]
    assert [s for s in range(3001) if soak.fires(s, 1000, soak.churn_phase(1000))] == \
        [1000, 2000, 3000]
    assert [s for s in range(6000) if soak.fires(s, 2000, soak.nan_phase(2000))] == [1500, 3500,
                                                                                     5500]
    assert not any(soak.fires(s, 0, 0) for s in range(10))


def test_default_events_never_share_a_step():
    grids = [{s for s in range(10000) if soak.fires(s, every, phase(every))}
             for every, phase in ((500, soak.reset_phase), (1000, soak.churn_phase),
                                  (2000, soak.nan_phase))]
    assert [len(g) for g in grids] == [20, 9, 5]
    assert not (grids[0] & grids[1]) and not (grids[0] & grids[2]) and not (grids[1] & grids[2])


def test_every_step_has_a_stream_and_others_sit_out():
    assert not any(soak.sits_out(0, step) for step in range(1000))
    assert sum(soak.sits_out(1, s) for s in range(700)) == 100       # one step in 7
    assert sum(soak.sits_out(3, s) for s in range(1100)) == 100      # one step in 11


def test_stream_starts_differ_on_a_shared_clip():
    starts = {soak.stream_start(serial, 120) for serial in range(0, 12, 3)}   # all on carphone
    assert len(starts) == 4


def test_nan_check():
    ok, bad = object(), NonFiniteStateError("step 3: NaN")
    assert soak.nan_check([ok, bad, ok], target=1) == []
    assert soak.nan_check([ok, ok], target=-1) == []
    missed = soak.nan_check([ok, ok], target=0)
    assert len(missed) == 1 and "NaN injected" in missed[0]
    extra = soak.nan_check([bad, bad], target=1)
    assert len(extra) == 1 and "result 0 (no NaN)" in extra[0]
    assert len(soak.nan_check([bad], target=-1)) == 1


def test_growth_and_slope():
    assert soak.growth_percent(200.0, 203.0) == pytest.approx(1.5)
    assert soak.slope_mb_per_1k_steps([0, 1000, 2000], [100.0, 101.0, 102.0]) == \
        pytest.approx(1.0)
    assert soak.slope_mb_per_1k_steps([500], [1.0]) is None


def test_sample_steps():
    assert soak.sample_steps(300, 100, 50) == {0, 50, 100, 200, 300}
    assert soak.sample_steps(250, 100, 0) == {0, 100, 200, 250}


def test_soak_schedule_names_what_cannot_work():
    assert soak.SoakSchedule(steps=10, warmup_steps=9).warmup_steps == 9
    for kwargs, message in (({"steps": 0, "warmup_steps": 0}, "steps: expected >= 1, got 0"),
                            ({"streams": 0}, "streams: expected >= 1, got 0"),
                            ({"sample_every": 0}, "sample_every: expected >= 1, got 0"),
                            ({"steps": 100}, r"warmup_steps: expected 0 to steps - 1 \(99\), "
                                             r"got 500")):
        with pytest.raises(ConfigError, match=message):
            soak.SoakSchedule(**kwargs)


def _result(rss_mb, injected=2, caught=2, problems=()):
    samples = [{"step": 100 * i, "rss_mb": value, "step_ms": None if i == 0 else 5.0}
               for i, value in enumerate(rss_mb)]
    return {"samples": samples, "step_ms_median": 5.0, "problems": list(problems),
            "counts": {"resets": 1, "leaves": 1, "joins": 1, "nan_injected": injected,
                       "nan_caught": caught, "unexpected_nonfinite": 0}}


def test_summary_passes_flat_memory():
    summary = soak.summarize(_result([150.0, 200.0, 201.0, 201.0]), warmup_steps=100)
    assert summary["rss_mb_after_warmup"] == 200.0 and summary["rss_mb_end"] == 201.0
    assert summary["rss_mb_max"] == 201.0 and summary["growth_percent_after_warmup"] == 0.5
    assert summary["passed"] and summary["failures"] == []


def test_summary_fails_growth_or_missed_nan():
    grown = soak.summarize(_result([150.0, 200.0, 204.0]), warmup_steps=100)
    assert not grown["passed"] and "grew 2.00 %" in grown["failures"][0]
    missed = soak.summarize(_result([200.0, 200.0], caught=1), warmup_steps=0)
    assert not missed["passed"] and "1 of 2 injected" in missed["failures"][0]
    extra = soak.summarize(_result([200.0, 200.0], problems=["step 9: result 1 ..."]), 0)
    assert not extra["passed"] and extra["failures"] == ["step 9: result 1 ..."]
