"""ONNX export of one STAE time step with explicit state, graph checks, precision variants and
TensorRT engine building. Imports torch only where the reference is needed (export, parity)."""
