"""Stream a video to a STAE model served by Triton: one sequence per video, one request a frame.

    python -m stae_deploy.serving.triton_client --url localhost:8001 --model stae \\
        --repository model_repository --input clip.mp4 [--max-frames N] [--sequence-id N]
        [--output side_by_side.mp4 [--force]]

The client reads the frame input's name and size from the artifact metadata the server's model
config carries (``stae triton`` writes it into ``config.pbtxt``), or with ``--repository`` from
``<repository>/<model>/1/`` on disk; it prepares frames exactly as the runtime does
(:func:`stae_deploy.runtime.frames.bgr_to_model_frame`) and sends each with the sequence flags
``config.pbtxt`` declares: the same ``sequence_id`` (correlation ID) on every request,
``sequence_start`` on the first, ``sequence_end`` on the last. Triton fills the model's
START/READY/END/CORRID inputs from them and keeps the recurrent state between requests. Each
prediction is scored (PSNR, dB) against the frame that follows it.

Needs the ``triton`` extra (tritonclient[grpc]).
"""
from __future__ import annotations

import argparse
import random
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from stae_deploy.runtime.artifact import ONNX_SUFFIX, ArtifactMetadata, read_engine_sidecar
from stae_deploy.runtime.errors import (ArtifactError, ConfigError, NonFiniteStateError,
                                        SequenceLostError, StaeError, exit_code_of)
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.frames import bgr_to_model_frame, model_frame_to_bgr
from stae_deploy.runtime.media import VideoFileWriter, side_by_side
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.serving.triton_graph import CORRID_OUT, NOTE_CONTROLS
from stae_deploy.serving.triton_python_repository import ARTIFACT
from stae_deploy.serving.triton_repository import VERSION_DIR, metadata_from_model_config

PROGRAM = "python -m stae_deploy.serving.triton_client"
MODEL_FILES = ("model.onnx", "model.plan")   # what `stae triton` writes in VERSION_DIR
MAX_SEQUENCE_ID = 2 ** 63 - 1         # the Triton copy reads CORRID as int64
OUTPUT_FPS = 25.0
# How Triton (or model.py) says that it has no state for a sequence.
LOST_SEQUENCE_MESSAGES = ("must specify the START flag", "no state on this server")
NONFINITE_MESSAGE = "NaN/Inf"          # in model.py's error for a non-finite prediction


@dataclass(frozen=True)
class ServedModel:
    """What a client needs about a model in a Triton repository.

    name:      the model's name in Triton (its directory in the repository).
    metadata:  the artifact metadata of its Triton copy; ``metadata.spec`` is the state protocol:
               ``spec.frame`` the frame input, RGB float32 (batch, 3, H, W) in [0, 1];
               ``spec.prediction`` the predicted next frame, same layout. The sequence controls
               Triton fills in are extra data inputs of an onnxruntime copy.
    max_batch: the config's max_batch_size, when read from the server (None: not known).
    """

    name: str
    metadata: ArtifactMetadata
    max_batch: int | None = None

    @property
    def spec(self) -> IOSpec:
        return self.metadata.spec


def served_model(repository: str | Path, model_name: str) -> ServedModel:
    """Read the metadata of ``<repository>/<model_name>/1/model.onnx`` (or ``model.plan`` and its
    sidecar), which must be a model ``stae triton`` wrote (:class:`ArtifactError` otherwise)."""
    version_dir = Path(repository) / model_name / VERSION_DIR
    if (version_dir / ARTIFACT).is_file():      # the plain step; no controls in it
        return ServedModel(model_name, OnnxArtifact.open(version_dir / ARTIFACT).metadata)
    found = [version_dir / name for name in MODEL_FILES if (version_dir / name).is_file()]
    if not found:
        raise ArtifactError(f"{version_dir}: no {' or '.join(MODEL_FILES)}; pass the model "
                            f"repository `stae triton` wrote and the model's name in it")
    path = found[0]
    metadata: ArtifactMetadata = (OnnxArtifact.open(path).metadata if path.suffix == ONNX_SUFFIX
                                  else read_engine_sidecar(path)[0])
    if not metadata.notes.get(NOTE_CONTROLS):
        raise ArtifactError(f"{path}: not a Triton copy (its notes lack '{NOTE_CONTROLS}'); "
                            f"write the repository with `stae triton`")
    return ServedModel(model_name, metadata)


@dataclass(frozen=True)
class SequenceRequest:
    """One request of a Triton sequence.

    frame:       the model frame, (1, 3, H, W) float32 in [0, 1].
    sequence_id: the correlation ID, the same on every request of the sequence.
    start:       sequence_start: the server starts the state from zeros.
    end:         sequence_end: the server frees the sequence's slot after this request.
    """

    frame: np.ndarray
    sequence_id: int
    start: bool
    end: bool


def sequence_requests(frames_bgr: Iterable[np.ndarray], frame_hw: tuple[int, int],
                      sequence_id: int) -> Iterator[SequenceRequest]:
    """One request per decoded BGR uint8 ``(H, W, 3)`` frame, prepared like the runtime's.

    The first request starts the sequence and the last ends it, so each frame is sent only once
    the next one has been read (the end of ``frames_bgr`` is the end of the sequence).
    """
    previous: np.ndarray | None = None
    first = True
    for frame_bgr in frames_bgr:
        frame = bgr_to_model_frame(frame_bgr, frame_hw)[None]
        if previous is not None:
            yield SequenceRequest(previous, sequence_id, start=first, end=False)
            first = False
        previous = frame
    if previous is not None:
        yield SequenceRequest(previous, sequence_id, start=first, end=True)


def infer_inputs(model: ServedModel, request: SequenceRequest) -> list[grpcclient.InferInput]:
    """The request's tensors: the frame under the model's input name, shape (1, 3, H, W).

    The sequence controls are not tensors here: Triton fills START/READY/END/CORRID from the
    request's sequence_id/sequence_start/sequence_end.
    """
    frame = request.frame.astype(model.spec.frame.dtype, copy=False)
    tensor = grpcclient.InferInput(model.spec.frame.name, list(frame.shape),
                                   np_to_triton_dtype(frame.dtype))
    tensor.set_data_from_numpy(frame)
    return [tensor]


class PendingResponse:
    """A request in flight: :meth:`result` waits for Triton's answer."""

    def __init__(self, url: str, model: ServedModel, request: SequenceRequest):
        self.url, self.model, self.request = url, model, request
        self._done = threading.Event()
        self._result: Any = None
        self._error: InferenceServerException | None = None

    def answer(self, result: Any, error: InferenceServerException | None) -> None:
        """tritonclient's callback (on its thread)."""
        self._result, self._error = result, error
        self._done.set()

    def result(self) -> np.ndarray:
        """The prediction (3, H, W) float32. Raises :class:`SequenceLostError` when the server is
        unreachable or has no state for the sequence, :class:`NonFiniteStateError` when the model
        produced NaN/Inf (the server reset the sequence's state), :class:`StaeError` for any
        other refusal (Triton's message, which names the tensor) or a response for another
        sequence."""
        self._done.wait()
        where = f"Triton at {self.url}, model '{self.model.name}'"
        error = self._error
        if error is not None:
            message = error.message() or str(error)
            if str(error.status()) == "StatusCode.UNAVAILABLE":
                raise SequenceLostError(f"{where}: unreachable ({message})")
            if any(sign in message for sign in LOST_SEQUENCE_MESSAGES):
                raise SequenceLostError(f"{where}: {message}")
            if NONFINITE_MESSAGE in message:
                raise NonFiniteStateError(f"{where}: {message}")
            raise StaeError(f"{where}: {message}")
        echoed = int(self._result.as_numpy(CORRID_OUT).reshape(-1)[0])
        if echoed != self.request.sequence_id:
            raise StaeError(f"{where}: response for sequence {echoed}, expected "
                            f"{self.request.sequence_id}")
        return self._result.as_numpy(self.model.spec.prediction.name)[0]


class TritonSequenceClient:
    """A gRPC connection to one model on a Triton server; a context manager."""

    def __init__(self, url: str, model: ServedModel):
        self.url, self.model = url, model
        self._client = grpcclient.InferenceServerClient(url=url)
        self._outputs = [grpcclient.InferRequestedOutput(model.spec.prediction.name),
                         grpcclient.InferRequestedOutput(CORRID_OUT)]

    @classmethod
    def connect(cls, url: str, model_name: str) -> "TritonSequenceClient":
        """A client of ``model_name`` at ``url``, its metadata read from the server's model
        config; :class:`SequenceLostError` when the server cannot be reached, :class:`StaeError`
        when it does not serve that model, :class:`ArtifactError` when its config carries no
        STAE metadata."""
        client = grpcclient.InferenceServerClient(url=url)
        try:
            config = client.get_model_config(model_name, as_json=True)["config"]
        except InferenceServerException as err:
            message = err.message() or str(err)
            kind = (SequenceLostError if str(err.status()) == "StatusCode.UNAVAILABLE"
                    else StaeError)
            raise kind(f"Triton at {url}: {message} (is `stae serve` running there, serving a "
                       f"model named '{model_name}'?)") from None
        finally:
            client.close()
        metadata = metadata_from_model_config(config, f"Triton at {url}, model '{model_name}'")
        return cls(url, ServedModel(model_name, metadata, int(config.get("max_batch_size", 0))))

    def submit(self, request: SequenceRequest) -> PendingResponse:
        """Send one request without waiting; :meth:`PendingResponse.result` waits for it."""
        pending = PendingResponse(self.url, self.model, request)
        self._client.async_infer(
            self.model.name, infer_inputs(self.model, request), pending.answer,
            outputs=self._outputs, sequence_id=request.sequence_id,
            sequence_start=request.start, sequence_end=request.end)
        return pending

    def infer(self, request: SequenceRequest) -> np.ndarray:
        """Send one request and wait; the prediction, (3, H, W) float32 (errors: see
        :meth:`PendingResponse.result`)."""
        return self.submit(request).result()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TritonSequenceClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class ClientSettings:
    """One video streamed as one sequence.

    url:         Triton's gRPC endpoint (host:port).
    model_name:  the model's name in Triton.
    repository:  the model repository `stae triton` wrote, read for the model's metadata (None:
                 read it from the server's model config).
    video:       a source `stae run` reads: a video file (or camera index / URL).
    max_frames:  stop after this many frames (None: the whole video).
    sequence_id: the correlation ID, 1 .. 2**63-1, unique among live sequences.
    output:      write actual | predicted side by side as an MP4 here (None: no video).
    force:       overwrite ``output`` if it exists.
    """

    url: str
    model_name: str
    video: str
    sequence_id: int
    repository: Path | None = None
    max_frames: int | None = None
    output: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.sequence_id <= MAX_SEQUENCE_ID:
            raise ConfigError(f"sequence_id: expected 1 .. 2**63-1 (0 means 'no sequence' to "
                              f"Triton), got {self.sequence_id}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames: expected >= 1, got {self.max_frames}")


def decoded_frames(grabber: FrameGrabber, max_frames: int | None) -> Iterator[np.ndarray]:
    """BGR uint8 (H, W, 3) frames from ``grabber`` until its end or ``max_frames``."""
    count = 0
    while max_frames is None or count < max_frames:
        event = grabber.read()
        if event is None:
            return
        count += 1
        yield event.frame


def stream_video(settings: ClientSettings, log: Callable[[str], None] = print) -> list[float]:
    """Stream ``settings.video`` as one sequence; the PSNR (dB) of each prediction against the
    frame that follows it, in order (one fewer than the frames sent)."""
    output = refuse_overwrite(settings.output, settings.force) if settings.output else None
    scores: list[float] = []
    prediction: np.ndarray | None = None
    with ExitStack() as stack:
        grabber = stack.enter_context(FrameGrabber(SourceConfig(settings.video), log=log))
        client = stack.enter_context(
            TritonSequenceClient(settings.url, served_model(settings.repository,
                                                            settings.model_name))
            if settings.repository is not None
            else TritonSequenceClient.connect(settings.url, settings.model_name))
        model = client.model
        writer = stack.enter_context(VideoFileWriter(output, OUTPUT_FPS)) if output else None
        frames = decoded_frames(grabber, settings.max_frames)
        for index, request in enumerate(sequence_requests(frames, model.spec.frame_size,
                                                          settings.sequence_id)):
            actual = request.frame[0]
            if prediction is not None:
                scores.append(psnr_db(np.clip(prediction, 0.0, 1.0), actual))
                log(f"frame {index}: PSNR {scores[-1]:.2f} dB")
                if writer is not None:
                    writer.write(side_by_side([("actual", model_frame_to_bgr(actual)),
                                               ("predicted", model_frame_to_bgr(prediction))]))
            prediction = client.infer(request)
    return scores


def main(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, stream the video, print the mean PSNR."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001", help="Triton's gRPC endpoint")
    parser.add_argument("--model", required=True, help="the model's name in Triton")
    parser.add_argument("--repository", type=Path, default=None,
                        help="the model repository `stae triton` wrote (read for the model's "
                             "frame input name and size; default: ask the server)")
    parser.add_argument("--input", required=True,
                        help="a video file (or camera index / URL) OpenCV can read")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--sequence-id", type=int, default=None,
                        help="1 .. 2**63-1, unique among live sequences (default: random)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write actual | predicted side by side as an MP4 video")
    parser.add_argument("--force", action="store_true", help="overwrite --output")
    args = parser.parse_args(argv)

    def stream() -> int:
        settings = ClientSettings(
            url=args.url, model_name=args.model, repository=args.repository, video=args.input,
            sequence_id=(random.randrange(1, MAX_SEQUENCE_ID + 1) if args.sequence_id is None
                         else args.sequence_id),
            max_frames=args.max_frames, output=args.output, force=args.force)
        scores = stream_video(settings, log=lambda line: print(line, file=sys.stderr))
        if scores:
            print(f"{len(scores)} predictions, mean PSNR {np.mean(scores):.2f} dB "
                  f"(sequence {settings.sequence_id})")
        return 0

    return exit_code_of(PROGRAM, stream)


if __name__ == "__main__":
    sys.exit(main())
