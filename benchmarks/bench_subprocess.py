"""Run one of the bench's measurement modules in a fresh interpreter and read its JSON answer.

A fresh process is how the bench isolates what a measurement must not share with it: peak RSS
(``stae_deploy.benchmarks.bench_memory``) and BLAS thread counts fixed at import
(``stae_deploy.benchmarks.bench_matmul``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Mapping, Sequence


def run_module_json(module: str, argv: Sequence[str],
                    env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``python -m module *argv`` (with ``env`` added to this environment); its last stdout line
    parsed as JSON. A failed run raises RuntimeError with the end of its stderr."""
    result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"python -m {module} {' '.join(argv)} exited {result.returncode}:\n"
                           f"{tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])
