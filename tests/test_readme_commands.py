"""The README's "From checkpoint to camera" commands, run as written, in order, from the demo
checkpoint, each exit 0 (slow: about ten minutes on two cores); the two-server routing block,
run as written."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading!r}"
    return match.group(1)


def test_the_block_uses_the_demo_checkpoint_and_no_placeholder():
    block = readme_block("## From checkpoint to camera")
    assert "CKPT=stae_ref/checkpoints/demo/stae_demo.pt" in block
    assert "ckpt.pt" not in block and "--input 0" not in block


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_readme_commands_run_in_order_and_exit_0(tmp_path):
    block = readme_block("## From checkpoint to camera")
    (tmp_path / "stae_ref").symlink_to(ROOT / "stae_ref")     # the commands' relative paths
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euxo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    trace = [line for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert result.returncode == 0, (f"exit {result.returncode} after: {trace[-1] if trace else ''}"
                                    f"\n{result.stderr[-3000:]}")
    for name in ("stae.onnx", "stae.fp16.onnx", "stae.int8.onnx", "out.mp4", "cams.0.mp4",
                 "cams.1.mp4", "model_repository/stae/config.pbtxt", "bench.json"):
        assert (tmp_path / name).is_file(), f"{name} was not written"


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_two_server_routing_block_runs_as_written(tmp_path):
    """README "More than one server": two real tritonservers on 127.0.0.1, three clips routed
    over them by `stae run --server ... --server ...`, both servers stopped by the block."""
    block = readme_block("**More than one server.**")
    (tmp_path / "stae_ref").symlink_to(ROOT / "stae_ref")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    shell = subprocess.Popen(["bash", "-euxo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = shell.communicate(timeout=840)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)       # never leave a server behind
    assert shell.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert [s["steps"] for s in summary["streams"]] == [30, 30, 30]
    assert all(s["state_losses"] == 0 and "error" not in s for s in summary["streams"])
    for index in range(3):
        assert len((tmp_path / f"cams.{index}.jsonl").read_text().splitlines()) == 30
