"""PyTorch reference of STAE (ICME 2021): the definition every deployed backend must reproduce.

Submodules: ``config`` (STAEConfig), ``model`` (STAE, step/rollout), ``cells`` (pluggable recurrent
cells, STAM first), ``state_spec`` (config -> state protocol), ``checkpoint``, ``footage`` (real
video from package registries). Importing this package does not import torch; ``model`` does.
"""
