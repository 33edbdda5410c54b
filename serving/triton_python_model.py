"""Triton Python-backend model for STAE, copied as ``<model>/1/model.py`` by ``stae triton
--backend python`` (:mod:`stae_deploy.serving.triton_python_repository`).

Every sequence with a request in one ``execute()`` runs as one batched step of the torch-free
runtime (:meth:`Predictor.step_many` over ``1/stae.onnx``). Each sequence's recurrent state is a
:class:`Stream` keyed by its correlation ID: START makes a fresh one, END frees it after the
step, and a sequence silent for longer than the config's ``max_sequence_idle_microseconds`` is
freed as Triton forgets it. A request without START for a correlation ID that has no state here
(the server restarted, or the sequence idled out) gets an error that says so; the others in the
batch are answered normally. Responses carry the prediction and ``CORRID_OUT``, so a client can
check that a response belongs to its sequence.

Only the Triton server imports this file: ``triton_python_backend_utils`` exists only there.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # Triton's

from stae_deploy.runtime.errors import NonFiniteStateError
from stae_deploy.runtime.predictor import Predictor, Stream
from stae_deploy.serving.triton_graph import CORRID, CORRID_OUT, END, START
from stae_deploy.serving.triton_python_repository import ARTIFACT, THREADS_PARAMETER


def _input(request: Any, name: str) -> np.ndarray:
    """The request's tensor ``name`` as numpy. Through DLPack: ``as_numpy()`` of the wheel's stub,
    built for numpy 1, does not hand numpy 2 the tensor's data."""
    return np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))


def _scalar(request: Any, name: str) -> int:
    return int(_input(request, name).reshape(-1)[0])


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        threads = int(config["parameters"][THREADS_PARAMETER]["string_value"])
        self.predictor = Predictor.load(version_dir / ARTIFACT, threads=threads or None)
        self.frame_name = self.predictor.spec.frame.name
        self.prediction_name = self.predictor.spec.prediction.name
        idle_us = int(config["sequence_batching"]["max_sequence_idle_microseconds"])
        self.idle_s = idle_us / 1e6
        self.streams: dict[int, tuple[Stream, float]] = {}   # corrid -> (state, last request)

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        for corrid, (_, seen) in list(self.streams.items()):
            if now - seen > self.idle_s:
                self._free(corrid)
        responses: list[Any] = [None] * len(requests)
        stepping: list[tuple[int, int, bool]] = []          # (request index, corrid, end)
        frames: list[np.ndarray] = []
        for index, request in enumerate(requests):
            corrid = _scalar(request, CORRID)
            if _scalar(request, START):
                self._free(corrid)
                self.streams[corrid] = (self.predictor.new_stream(), now)
            elif corrid not in self.streams:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"sequence {corrid}: no state on this server (it restarted, or the sequence "
                    f"was idle longer than {self.idle_s:g} s); start a new sequence"))
                continue
            self.streams[corrid] = (self.streams[corrid][0], now)
            frames.append(_input(request, self.frame_name)[0])   # a sequence request: batch 1
            stepping.append((index, corrid, bool(_scalar(request, END))))
        if stepping:
            results = self.predictor.step_many(
                [self.streams[corrid][0] for _, corrid, _ in stepping], frames)
            for (index, corrid, end), result in zip(stepping, results):
                responses[index] = self._response(corrid, result)
                if end:
                    self._free(corrid)
        return responses

    def _response(self, corrid: int, result: np.ndarray | NonFiniteStateError) -> Any:
        if isinstance(result, NonFiniteStateError):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"sequence {corrid}: {result} (its state was reset)"))
        # from_dlpack: pb_utils.Tensor(name, array) sends an empty buffer under numpy 2 (the
        # wheel's stub is built for numpy 1); DLPack hands the memory over intact.
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor.from_dlpack(self.prediction_name, np.ascontiguousarray(result[:1])),
            pb_utils.Tensor.from_dlpack(CORRID_OUT, np.array([[corrid]], dtype=np.int64))])

    def _free(self, corrid: int) -> None:
        entry = self.streams.pop(corrid, None)
        if entry is not None:
            entry[0].close()

    def finalize(self) -> None:
        for corrid in list(self.streams):
            self._free(corrid)
