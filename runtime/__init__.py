"""Torch-free streaming runtime for STAE: state protocol, frame preprocessing, backends.

Nothing under ``runtime/`` may import torch: Jetson images carry numpy, OpenCV, TensorRT and
onnxruntime only. The reference (``stae_ref``), exporter and calibration import from here, never
the other way round.
"""
