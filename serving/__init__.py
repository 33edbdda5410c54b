"""Serving on NVIDIA Triton: the model repository (``stae triton``) and its client."""
