"""The live web view of `stae run --serve`: the page (no internet assets), live MJPEG panels,
/api/streams, /metrics in the Prometheus text format (parsed with prometheus_client's parser)
and /healthz, while real clips stream; health turning bad for the reasons it names; loopback
unless another address is asked for."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.live_view import LiveView, ViewSettings
from stae_deploy.runtime.live_view_server import VIEW_NICENESS
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import PanelFrames, RunOptions, RunSummary, run_streams
from stae_deploy.stae_ref.footage import fetch

FRAME_HW = (32, 32)          # the model frame of the tests that feed the view by hand
README_SHOT = Path(__file__).resolve().parents[1] / "benchmarks/results/live_view.png"


def get(url: str, timeout_s: float = 10.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def first_mjpeg_part(url: str) -> bytes:
    """The first JPEG of an MJPEG stream."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        head = b""
        while b"\r\n\r\n" not in head:
            head += answer.read(1)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        return answer.read(length)


def metric_samples(text: str) -> dict[str, dict]:
    """name -> {labels tuple: value} of every sample."""
    samples: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def test_the_view_shows_every_stream_live_and_serves_metrics_and_health(demo_dynamic_onnx_path):
    sources = [str(fetch("carphone")), str(fetch("city"))]
    predictor = Predictor.load(demo_dynamic_onnx_path)
    view = LiveView(ViewSettings(port=0), sources, 6.0, predictor.frame_hw)
    results: list = []
    with view, FrameGrabber(SourceConfig(sources[0], realtime=True)) as a, \
            FrameGrabber(SourceConfig(sources[1], realtime=True)) as b:
        view.watch_sources([a, b])
        run = threading.Thread(target=lambda: results.append(run_streams(
            predictor, [a, b], RunOptions(max_frames=60), observers=[view],
            log=lambda _: None)))
        run.start()
        status, kind, page = get(view.url)
        assert status == 200 and kind.startswith("text/html")
        assert b"/stream/" in page and b"/api/streams" in page
        assert b"http://" not in page and b"https://" not in page     # no CDN, no internet
        jpeg = first_mjpeg_part(view.url + "stream/1.mjpg")             # someone watches now
        assert jpeg[:3] == b"\xff\xd8\xff" and len(jpeg) > 1000
        time.sleep(1.0)
        status, _, body = get(view.url + "api/streams")
        streams = json.loads(body)["streams"]
        assert [s["source"] for s in streams] == sources
        assert all(s["healthy"] and s["step"] >= 1 and s["fps"] for s in streams)
        status, kind, body = get(view.url + "metrics")
        assert status == 200 and kind.startswith("text/plain")
        samples = metric_samples(body.decode())
        latency_counts = samples["stae_step_latency_seconds_count"]
        assert set(latency_counts) == {(("stream", "0"),), (("stream", "1"),)}
        assert all(count >= 1 for count in latency_counts.values())
        assert samples["stae_stream_healthy"] == {(("stream", "0"),): 1.0,
                                                  (("stream", "1"),): 1.0}
        status, _, body = get(view.url + "healthz")
        assert status == 200 and json.loads(body)["healthy"] is True
        run.join(timeout=120)
        [(summaries, _)] = results
        final = metric_samples(get(view.url + "metrics")[2].decode())
        for index, summary in enumerate(summaries):
            label = (("stream", str(index)),)
            # paced sources drop frames when the machine is busy: count what was stepped
            assert final["stae_frames_total"][label] == summary.steps >= 30
            assert final["stae_step_latency_seconds_count"][label] == summary.steps
            assert final["stae_dropped_frames_total"][label] == summary.dropped_frames
        status, _, body = get(view.url + "healthz")
        assert status == 200 and {s["health"] for s in json.loads(body)["streams"]} == {
            "ended normally"}
        assert get(view.url + "stream/7.mjpg")[0] == 404


def step_record(step: int, nonfinite: bool = False) -> dict:
    return {"step": step, "source_frame": step - 1, "infer_ms": 12.0,
            "capture_to_prediction_ms": 15.0, "nonfinite": nonfinite, "psnr_db": 30.0,
            "copy_last_psnr_db": 28.5, "surprise": 1.5}


def test_health_turns_bad_for_the_reason_it_names():
    with LiveView(ViewSettings(port=0, stale_s=0.3), ["cam-a", "cam-b"], 6.0,
                  FRAME_HW) as view:
        summary = RunSummary(steps=1)
        view.on_step(0, step_record(1), summary, None)
        view.on_step(1, step_record(1, nonfinite=True), summary, None)
        status, _, body = get(view.url + "healthz")
        health = json.loads(body)
        assert status == 503 and health["healthy"] is False
        assert health["streams"][0] == {"stream": 0, "healthy": True, "health": "ok"}
        assert "not finite" in health["streams"][1]["health"]
        time.sleep(0.5)
        assert "no frame for" in json.loads(get(view.url + "healthz")[2])["streams"][0][
            "health"]
        view.on_end(0, RunSummary(error="cam-a: the source disappeared after frame 9"))
        assert json.loads(get(view.url + "healthz")[2])["streams"][0]["health"] == \
            "ended: cam-a: the source disappeared after frame 9"
        samples = metric_samples(get(view.url + "metrics")[2].decode())
        assert samples["stae_stream_healthy"][(("stream", "0"),)] == 0.0
        assert samples["stae_gain_over_copy_last_db"][(("stream", "0"),)] == 1.5
        assert np.isclose(samples["stae_surprise_score"][(("stream", "0"),)], 1.5)


def test_only_loopback_unless_asked_and_a_taken_port_is_named():
    with pytest.raises(ConfigError, match="--serve 0.0.0.0:8080: this address can be reached "
                                          "from other machines; pass --serve-remote"):
        ViewSettings.parse("0.0.0.0:8080")
    assert ViewSettings.parse("0.0.0.0:8080", allow_remote=True).host == "0.0.0.0"
    assert ViewSettings.parse(":9000") == ViewSettings(port=9000)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        ViewSettings.parse("localhost")
    assert ViewSettings.parse(":9000", max_fps=2.5).max_fps == 2.5
    with pytest.raises(ConfigError, match=r"max_fps \(--serve-fps\): expected panels per "
                                          r"second > 0, got 0"):
        ViewSettings.parse(":9000", max_fps=0)
    with LiveView(ViewSettings(port=0), ["cam"], 6.0, FRAME_HW) as view:
        port = int(view.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(ConfigError, match=f"--serve 127.0.0.1:{port}: cannot listen there"):
            LiveView(ViewSettings(port=port), ["cam"], 6.0, FRAME_HW)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_view_runs_in_its_own_process_at_a_lower_priority():
    """The server, the JPEG encoder and every request thread run in the view's process, all at
    niceness VIEW_NICENESS: a viewer never holds the run's GIL and yields the cores to the
    model's threads (benchmarks/live_view_cost.py measures the rest)."""
    threads_before, run_niceness = set(threading.enumerate()), os.getpriority(os.PRIO_PROCESS, 0)
    with LiveView(ViewSettings(port=0), ["cam"], 6.0, FRAME_HW) as view:
        answer = urllib.request.urlopen(view.url + "stream/0.mjpg", timeout=10)
        time.sleep(0.3)
        assert view.server_pid is not None and view.server_pid != os.getpid()
        tasks = list(Path(f"/proc/{view.server_pid}/task").iterdir())
        assert len(tasks) >= 3                    # main (encoder), server, the MJPEG request
        for task in tasks:
            assert os.getpriority(os.PRIO_PROCESS, int(task.name)) == max(
                VIEW_NICENESS, run_niceness), task
        assert set(threading.enumerate()) == threads_before      # nothing runs in the run's
        assert os.getpriority(os.PRIO_PROCESS, 0) == run_niceness   # the run is untouched
        answer.close()


def test_the_view_process_ends_with_the_run_even_a_killed_one(tmp_path):
    """A run that dies without closing its view (kill -9, os._exit) leaves no server behind:
    the view's process sees its doorbell close, stops and exits."""
    script = ("import os, sys; from stae_deploy.runtime.live_view import LiveView, ViewSettings\n"
              "view = LiveView(ViewSettings(port=0), ['cam'], 6.0, (32, 32))\n"
              "print(view.server_pid, view.url, flush=True); sys.stdin.readline(); os._exit(9)\n")
    run = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdin is not None and run.stdout is not None
    pid, url = run.stdout.readline().split()
    assert get(url + "healthz")[0] == 200
    run.stdin.write("\n")
    run.stdin.flush()
    assert run.wait(timeout=30) == 9
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the view's process outlived the run"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "healthz", timeout=5)


def test_a_view_that_died_does_not_stop_the_run():
    with LiveView(ViewSettings(port=0), ["cam"], 6.0, FRAME_HW) as view:
        get(view.url + "frame/0.jpg")                          # someone watches
        assert view.wants_panel(0)
        os.kill(view.server_pid, 9)
        time.sleep(0.5)
        frame = np.full((3, *FRAME_HW), 0.5, np.float32)
        for step in range(1, 4):                               # no exception, no wait
            view.on_step(0, step_record(step), RunSummary(steps=step),
                         PanelFrames(frame, frame) if view.wants_panel(0) else None)


def test_frames_of_another_size_and_too_little_shared_memory_are_refused_by_name():
    with LiveView(ViewSettings(port=0), ["cam"], 6.0, FRAME_HW) as view:
        small = np.zeros((3, 16, 16), np.float32)
        with pytest.raises(ConfigError, match=r"live view: stream 0's frames are \(3, 16, 16\), "
                                              r"expected \(3, 32, 32\)"):
            view.on_step(0, step_record(1), RunSummary(steps=1), PanelFrames(small, small))
    if Path("/dev/shm").is_dir():
        with pytest.raises(ConfigError, match=r"--serve: the live view needs .* MB of shared "
                                              r"memory for 1 stream\(s\) of 200000x200000 frames, "
                                              r"and /dev/shm has .* MB free"):
            LiveView(ViewSettings(port=0), ["cam"], 6.0, (200_000, 200_000))


def test_stae_run_serve_from_the_command_line(demo_dynamic_onnx_path, capsys):
    """`stae run ... --serve 127.0.0.1:0` names the page, metrics and health URLs and ends with
    the run; a bad --serve-fps is refused by name before anything runs."""
    from stae_deploy.cli.main import main

    command = ["run", str(demo_dynamic_onnx_path), "--input", str(fetch("city")),
               "--max-frames", "12", "--serve", "127.0.0.1:0", "--quiet"]
    assert main([*command, "--serve-fps", "0"]) == 2
    assert "max_fps (--serve-fps): expected panels per second > 0, got 0.0" in \
        capsys.readouterr().err
    assert main([*command, "--serve-fps", "4"]) == 0
    log = capsys.readouterr().err
    assert "live view: http://127.0.0.1:" in log and "/metrics" in log and "/healthz" in log


def chromium() -> str | None:
    """Debian's headless-capable chromium, if installed (`apt-get install chromium`)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_real_browser_sees_the_tiles_update(demo_dynamic_onnx_path, tmp_path):
    """Headless Chromium loads the page while a clip streams; two screenshots some seconds
    apart differ in the tile area (the panels move on). The second one is the README's."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    predictor = Predictor.load(demo_dynamic_onnx_path)
    source = str(fetch("city"))
    shots = [tmp_path / "first.png", tmp_path / "second.png"]
    with LiveView(ViewSettings(port=0), [source], 6.0, predictor.frame_hw) as view, \
            FrameGrabber(SourceConfig(source, realtime=True, loop=True)) as grabber:
        view.watch_sources([grabber])
        run = threading.Thread(target=run_streams, kwargs=dict(
            predictor=predictor, grabbers=[grabber], options=RunOptions(max_frames=400),
            observers=[view], log=lambda _: None))
        run.start()
        for shot in shots:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", "--window-size=1100,420",
                            "--virtual-time-budget=4000", f"--screenshot={shot}", view.url],
                           capture_output=True, timeout=120, check=True)
            time.sleep(3.0)
        run.join(timeout=300)
    first, second = (cv2.imread(str(shot)) for shot in shots)
    assert first is not None and first.shape == second.shape
    tile = (slice(40, 200), slice(10, 500))             # where the panel sits
    assert float(np.abs(first[tile].astype(int) - second[tile].astype(int)).mean()) > 1.0
    assert float(first[tile].std()) > 10.0              # a picture, not an empty box
    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shots[1], README_SHOT)
