"""ONNX export of one STAE time step with explicit state, and TensorRT engine building.

``to_onnx`` (the export), ``onnx_graph`` (load/save and the metadata), ``time_stacked`` and
``graph_rewrites`` (the fast graph), ``build_engine`` (TensorRT). Checks live in ``verify/``,
precision variants in ``calibration/``, Triton in ``serving/``, benchmarks in ``benchmarks/``.
"""
