"""stae-deploy: STAE video prediction from a PyTorch reference to ONNX, TensorRT and a streaming
runtime.

The one name this project installs. Its subpackages are the repository's top-level folders
(``pyproject.toml`` maps them): ``stae_deploy.runtime`` is ``runtime/``, ``stae_deploy.stae_ref``
is ``stae_ref/``, and so on; ``stae_deploy.cli`` (this folder) is the ``stae`` command. Importing
this package imports nothing else: the runtime stays torch-free.
"""
