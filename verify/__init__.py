"""Verification of an exported artifact: the ONNX checker, shape inference, the TensorRT lint,
the protocol against the graph, and parity rollouts against the PyTorch reference (``stae check``);
Polygraphy files for comparing a TensorRT engine."""
