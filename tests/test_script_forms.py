"""The script forms ``python export/to_onnx.py`` and ``python export/build_engine.py`` work from the
repository root and from anywhere else. Run as a script, the file's own folder is first on
sys.path, so a module there named like a stdlib or installed package would break the import.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python <repo>/<script> args`` with this venv's python, in ``cwd``."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(params=["repository root", "elsewhere"])
def cwd(request, tmp_path) -> Path:
    return ROOT if request.param == "repository root" else tmp_path


@pytest.mark.integration   # exports and checks a model (~20 s)
def test_to_onnx_as_a_script_exports_and_passes(cwd, tmp_path):
    output = tmp_path / "script_form.onnx"
    result = run_script("export/to_onnx.py", "--frame-size", "64", "--output", str(output),
                        "--steps", "2", "--quiet", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PASSED" in result.stdout
    assert output.stat().st_size > 0


def test_build_engine_as_a_script_prints_its_help(cwd):
    result = run_script("export/build_engine.py", "--help", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: stae build")
