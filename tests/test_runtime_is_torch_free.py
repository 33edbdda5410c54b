"""Jetson images have no torch: nothing under runtime/ (nor the footage tools) may import it."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib, pkgutil, sys, json
from stae_deploy import runtime
modules = [m.name for m in pkgutil.walk_packages(runtime.__path__, 'stae_deploy.runtime.')]
for name in modules:
    if name != 'stae_deploy.runtime.cuda_runtime' or importlib.util.find_spec('cuda') is not None:
        importlib.import_module(name)
from stae_deploy.cli import main as cli
import stae_deploy.stae_ref.footage
assert cli.main(['data', '--json']) == 0
model, video = sys.argv[1], stae_deploy.stae_ref.footage.fetch('carphone')
assert cli.main(['run', model, '--input', str(video), '--max-frames', '3', '--quiet']) == 0
print(json.dumps({'modules': modules, 'torch': 'torch' in sys.modules}))
"""


def test_runtime_and_footage_never_import_torch(small_onnx_path):
    result = subprocess.run([sys.executable, "-c", PROBE, str(small_onnx_path[0])], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert {"stae_deploy.runtime.protocol", "stae_deploy.runtime.predictor",
            "stae_deploy.runtime.stream_run", "stae_deploy.runtime.psnr_report"} \
        <= set(report["modules"])
    assert report["torch"] is False
