"""Precision variants: FP16 (``fp16``) and INT8 for a recurrent model: calibration data from real rollouts, Q/DQ graphs, drift.

Modules: ``calib_data`` (the calibration file and its checks against the protocol), ``record``
(``stae calibrate``), ``node_groups`` (the graph's nodes grouped by role), ``policy`` (what is
quantised), ``targets`` (ModelOpt for TensorRT, onnxruntime quantize_static), ``quantize``
(``stae quantize``), ``drift`` (``stae drift``), ``sensitivity`` (``stae sensitivity``).
"""
