"""An ONNX artifact opened in onnxruntime, validated against the protocol stored in it, and the
plainest correct way to step it: ``session.run`` with the state fed back through numpy.

The streaming runtime's IOBinding backend is checked against this stepper, and the exporter's
parity checks drive it against the reference. Torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, cast

import numpy as np
import onnxruntime as ort

from stae_deploy.runtime.artifact import ArtifactMetadata, check_graph_io
from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, TensorSpec

ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}

SessionConfigurator = Callable[[ort.SessionOptions], None]


def open_session(source: str | Path | OnnxArtifact, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None, configure: SessionConfigurator | None = None
                 ) -> tuple[ort.InferenceSession, ArtifactMetadata]:
    """Open ``source`` in onnxruntime and return (session, its verified metadata).

    source: a path (read and verified once by :meth:`OnnxArtifact.open`: a damaged file is
    refused) or an artifact already open; the session is built from the artifact's bytes.

    threads: intra-op threads (None: onnxruntime's default, one per core). configure: called on
    the session options last, e.g. to turn on profiling or off thread spinning (the benchmark
    does, so idle onnxruntime workers do not steal cores from the backend timed next).

    Raises :class:`ArtifactError` for a missing, unreadable or damaged file or missing metadata,
    and :class:`SpecMismatchError` naming the tensor when the stored protocol is not the graph's
    I/O.
    """
    artifact = source if isinstance(source, OnnxArtifact) else OnnxArtifact.open(source)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if configure is not None:
        configure(options)
    try:
        session = ort.InferenceSession(artifact.data, options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own exception types for bad graphs
        raise ArtifactError(f"{artifact.path}: onnxruntime cannot load it: {_load_failure(err)}"
                            ) from None
    check_graph_io(artifact.metadata.spec, [_spec(a) for a in session.get_inputs()],
                   [_spec(a) for a in session.get_outputs()], str(artifact.path))
    return session, artifact.metadata


class OnnxStepper:
    """Steps an ONNX artifact with ``session.run``; state dicts are keyed by state input name."""

    def __init__(self, source: str | Path | OnnxArtifact, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None, configure: SessionConfigurator | None = None):
        self.session, self.metadata = open_session(source, providers, threads, configure)
        self.spec = self.metadata.spec
        self._output_names = [t.name for t in self.spec.outputs]

    def zero_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        """The protocol's zero state (in the graph's state dtypes)."""
        return self.spec.zero_state(batch)

    def step(self, frame: np.ndarray, state: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One step. frame: (B, 3, H, W) float32 (cast to the graph's frame dtype).

        Returns (prediction, next state keyed by input name, every output keyed by output name).
        """
        frame_spec = self.spec.frame
        feed = {frame_spec.name: frame.astype(frame_spec.dtype, copy=False), **state}
        results = cast("list[np.ndarray]", self.session.run(self._output_names, feed))
        outputs = dict(zip(self._output_names, results))
        next_state = {p.input.name: outputs[p.output.name] for p in self.spec.state}
        return outputs[self.spec.prediction.name], next_state, outputs


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) else DYNAMIC_BATCH for d in arg.shape)
    return TensorSpec(arg.name, dims, ORT_DTYPES.get(arg.type or "", str(arg.type)))


def _load_failure(err: Exception) -> str:
    """Why onnxruntime refused a graph whose file read and verified well: its own reason, without
    the path and status code its text repeats."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    reason = reason.split(" failed:", 1)[-1].strip()
    return f"{reason} (onnxruntime {ort.__version__})"
