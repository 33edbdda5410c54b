"""What machine a measurement ran on, for benchmark reports (torch-free)."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS of /proc/self/status, Linux), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line (Linux only)")


def machine_info(**settings: Any) -> dict[str, Any]:
    """CPU model (/proc/cpuinfo, else ``platform.processor()``), CPU counts, OS, Python, numpy
    and onnxruntime versions, plus the caller's ``settings`` (e.g. provider, threads)."""
    import onnxruntime

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": names[0] if names else platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "cpus_available": available,
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, **settings}
