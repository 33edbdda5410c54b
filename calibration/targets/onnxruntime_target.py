"""onnxruntime target: ``quantize_static`` to a QDQ graph (symmetric INT8 activations and
per-channel weights, MinMax calibration). onnxruntime's CPU provider fuses DQ -> Conv -> Q into
QLinearConv, so this graph runs real INT8 convolutions on a CPU (docs/design_brief.md §4)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from stae_deploy.calibration.targets.base import QuantTarget


class OnnxRuntimeTarget(QuantTarget):
    name = "onnxruntime"

    def quantize(self, source: Path, output: Path, calibration: Iterable[Mapping[str, np.ndarray]],
                 op_types: list[str] | None, exclude_nodes: list[str]) -> dict[str, Any]:
        import onnxruntime
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)

        class Feeds(CalibrationDataReader):
            def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]):
                self.feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                feed = next(self.feeds, None)
                return None if feed is None else dict(feed)

        quantize_static(
            str(source), str(output), Feeds(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types, per_channel=True, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude_nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        return {"tool": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
                "calibration_method": "minmax", "symmetric": True, "weights": "per-channel"}
