"""TensorRT target: NVIDIA ModelOpt ONNX PTQ (docs/design_brief.md §4).

Q/DQ pairs in TensorRT's placement (symmetric INT8, per-output-channel weights, per-tensor
activations), max calibration on CPU onnxruntime. TensorRT >= 10 builds it strongly typed with
the Q/DQ scales as given; onnxruntime runs the same graph as fake quantisation, which is how its
numerics are measured here. The non-quantised part stays FP32 (ModelOpt's default would convert
it to FP16; FP16 is a separate, separately measured variant).

ModelOpt patches onnxruntime's quantisation module for the whole process
(``modelopt/onnx/quantization/ort_patching.py``), after which onnxruntime's own
``quantize_static`` fails; and it logs on stdout. So it runs in a spawned child process.
"""
from __future__ import annotations

import logging
import multiprocessing
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from stae_deploy.calibration.targets.base import QuantTarget
from stae_deploy.runtime.errors import CalibrationError

CALIBRATION_METHOD = "max"


class ModelOptTarget(QuantTarget):
    name = "tensorrt"

    def quantize(self, source: Path, output: Path, calibration: Iterable[Mapping[str, np.ndarray]],
                 op_types: list[str] | None, exclude_nodes: list[str]) -> dict[str, Any]:
        feeds = list(calibration)
        stacked = {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
                version = child.submit(_quantize_in_child, str(source), str(output), stacked,
                                       op_types, exclude_nodes).result()
        except BrokenProcessPool:
            raise CalibrationError(
                f"{source}: the ModelOpt quantisation process died (out of memory? From a script, "
                f"call quantize_model under `if __name__ == '__main__':`, since the spawned "
                f"process imports the script again)") from None
        return {"tool": f"modelopt.onnx.quantization {version}",
                "calibration_method": CALIBRATION_METHOD, "symmetric": True,
                "weights": "per-channel", "high_precision_dtype": "fp32"}


class _DropNoGpuNotice(logging.Filter):
    """ModelOpt logs 'Failed to get GPU count' at ERROR on every CPU-only machine."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to get GPU count" not in record.getMessage()


def _quantize_in_child(source: str, output: str, calibration: dict[str, np.ndarray],
                       op_types: list[str] | None, exclude_nodes: list[str]) -> str:
    sys.stdout = sys.stderr
    import modelopt
    from modelopt.onnx.quantization import quantize

    logging.getLogger("modelopt.onnx").addFilter(_DropNoGpuNotice())
    quantize(source, quantize_mode="int8", calibration_data=calibration,
             calibration_method=CALIBRATION_METHOD, calibration_eps=["cpu"],
             op_types_to_quantize=op_types,
             nodes_to_exclude=[f"^{re.escape(n)}$" for n in exclude_nodes] or None,
             high_precision_dtype="fp32", output_path=output, log_level="WARNING")
    return modelopt.__version__
