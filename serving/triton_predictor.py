"""A model served by Triton, stepped like a local :class:`Predictor`: ``stae run --server``.

    model = ServedPredictor.connect(["grpc://127.0.0.1:8001"])     # /MODEL: default "stae"
    stream = model.new_stream("rtsp://cam-7/stream")
    [prediction] = model.step_many([stream], [frame])              # (1, 3, H, W)

Each stream is one Triton sequence on one server (several servers: chosen by
:func:`stae_deploy.serving.camera_routing.server_for` of the stream's name); its state stays on
the server. A step sends every stream's frame at once (asynchronous gRPC), so the sequence
batcher can run them as one batched step, and waits for all the answers. The model's frame input
and size come from the server's model config (the metadata ``stae triton`` writes into it).

A server that is down, or that restarted and lost a sequence, fails the stream's request with
:class:`SequenceLostError`. With ``reconnect_attempts`` > 0 the stream tries again with back-off,
starting a fresh sequence from the zero state with the same frame, and counts it in
``stream.state_losses`` (``stae run`` reports it per stream and per step); otherwise, or when
every attempt fails, the error stops the run, naming the server and the stream.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from stae_deploy.runtime.artifact import ArtifactMetadata
from stae_deploy.runtime.errors import (ConfigError, NonFiniteStateError, SequenceLostError,
                                        StaeError)
from stae_deploy.runtime.predictor import validated_frame
from stae_deploy.serving.camera_routing import server_for
from stae_deploy.serving.triton_client import (MAX_SEQUENCE_ID, PendingResponse, SequenceRequest,
                                               TritonSequenceClient)

SCHEME = "grpc://"
DEFAULT_MODEL = "stae"
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class ServerAddress:
    """A served model: ``grpc://HOST:PORT[/MODEL]`` (MODEL defaults to ``stae``)."""

    url: str                # host:port
    model_name: str = DEFAULT_MODEL

    @classmethod
    def parse(cls, text: str) -> "ServerAddress":
        """Parse ``grpc://HOST:PORT[/MODEL]``; :class:`ConfigError` naming the text otherwise."""
        if not text.startswith(SCHEME):
            raise ConfigError(f"--server {text!r}: expected {SCHEME}HOST:PORT[/MODEL] (Triton's "
                              f"gRPC endpoint; the HTTP endpoint is not supported)")
        url, _, model_name = text[len(SCHEME):].partition("/")
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--server {text!r}: expected {SCHEME}HOST:PORT[/MODEL], e.g. "
                              f"{SCHEME}127.0.0.1:8001/{DEFAULT_MODEL}")
        return cls(url, model_name or DEFAULT_MODEL)

    def __str__(self) -> str:
        return f"{SCHEME}{self.url}/{self.model_name}"


class ServedStream:
    """One stream's sequence on its server; the state lives there (see the module doc)."""

    def __init__(self, name: str, client: TritonSequenceClient):
        self.name, self.client = name, client
        self.sequence_id: int | None = None     # None: the next request starts a new sequence
        self.last_frame: np.ndarray | None = None
        self.steps = 0
        self.resets = 0
        self.nonfinite_resets = 0
        self.state_losses = 0

    def reset(self) -> None:
        """Start again from the zero state: the next request starts a new sequence (the old one
        is released by the server's idle timeout)."""
        self.sequence_id = None
        self.steps = 0
        self.resets += 1

    def request(self, frame: np.ndarray, end: bool = False) -> SequenceRequest:
        """The request that feeds ``frame`` (3, H, W) to this stream's sequence (a new one after
        a reset or at the start)."""
        start = self.sequence_id is None
        if start:
            self.sequence_id = secrets.randbelow(MAX_SEQUENCE_ID) + 1
        assert self.sequence_id is not None
        return SequenceRequest(frame[None], self.sequence_id, start=start, end=end)


class ServedPredictor:
    """Streams stepped on Triton servers; the :class:`StepModel` that ``stae run --server``
    drives. A context manager: :meth:`close` ends every open sequence."""

    def __init__(self, clients: Sequence[TritonSequenceClient], reconnect_attempts: int = 0,
                 backoff_s: float = 1.0, log: Callable[[str], None] = print):
        if reconnect_attempts < 0 or backoff_s < 0:
            raise ConfigError(f"reconnect_attempts/backoff_s: expected >= 0, got "
                              f"{reconnect_attempts} and {backoff_s}")
        first = clients[0].model
        for client in clients[1:]:
            if client.model.spec.to_json() != first.spec.to_json():
                raise ConfigError(f"--server: Triton at {client.url} serves a model whose "
                                  f"protocol differs from the one at {clients[0].url}; every "
                                  f"server must serve the same model")
        self.clients = list(clients)
        self.reconnect_attempts, self.backoff_s, self.log = reconnect_attempts, backoff_s, log
        self._streams: list[ServedStream] = []

    @classmethod
    def connect(cls, servers: Sequence[str], reconnect_attempts: int = 0, backoff_s: float = 1.0,
                log: Callable[[str], None] = print) -> "ServedPredictor":
        """Connect to each ``grpc://HOST:PORT[/MODEL]`` and read its model's metadata."""
        addresses = [ServerAddress.parse(text) for text in servers]
        if len({a.url for a in addresses}) != len(addresses):
            raise ConfigError(f"--server: each server once, got {list(servers)}")
        return cls([TritonSequenceClient.connect(a.url, a.model_name) for a in addresses],
                   reconnect_attempts, backoff_s, log)

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.clients[0].model.metadata

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) of the frames the served model takes, pixels."""
        return self.metadata.spec.frame_size

    @property
    def max_batch(self) -> int | None:
        """The servers' max_batch_size (the most sequences one server step runs)."""
        return self.clients[0].model.max_batch

    def new_stream(self, name: str = "") -> ServedStream:
        """A new sequence for the camera ``name``, on the server its name routes to."""
        url = server_for(name, [client.url for client in self.clients])
        stream = ServedStream(name, next(c for c in self.clients if c.url == url))
        self._streams.append(stream)
        return stream

    def state_extremes(self, stream: ServedStream) -> None:
        """None: the state lives on the server (the range guard does not run on it)."""
        return None

    def step_many(self, streams: Sequence[ServedStream], frames: Sequence[np.ndarray],
                  horizon: int = 1) -> list[np.ndarray | NonFiniteStateError]:
        """Feed frames[i] (RGB float32 (3, H, W) in [0, 1]) to streams[i], all requests in flight
        at once. Returns per stream its next frame (1, 3, H, W), or the
        :class:`NonFiniteStateError` of that stream (the server reset its state)."""
        if horizon != 1:
            raise ConfigError(f"horizon: a served model predicts the next frame only, got "
                              f"{horizon}; forecast further with the ONNX file locally")
        if len(streams) != len(frames):
            raise ConfigError(f"step_many: {len(streams)} streams but {len(frames)} frames")
        checked = [validated_frame(self.metadata.spec.frame, frame) for frame in frames]
        pending = [stream.client.submit(stream.request(frame))
                   for stream, frame in zip(streams, checked)]
        return [self._answer(stream, frame, sent)
                for stream, frame, sent in zip(streams, checked, pending)]

    def _answer(self, stream: ServedStream, frame: np.ndarray, pending: PendingResponse
                ) -> np.ndarray | NonFiniteStateError:
        try:
            prediction = pending.result()
        except NonFiniteStateError as err:
            stream.steps = 0
            stream.nonfinite_resets += 1
            return err
        except SequenceLostError as err:
            prediction = self._restart(stream, frame, err)
        else:
            stream.steps += 1
        stream.last_frame = frame
        return prediction[None]

    def _restart(self, stream: ServedStream, frame: np.ndarray, lost: SequenceLostError
                 ) -> np.ndarray:
        """Start a fresh sequence for ``stream`` with ``frame``, retrying with back-off."""
        where = f"stream '{stream.name}' (sequence {stream.sequence_id})"
        attempts = self.reconnect_attempts
        if attempts == 0:
            raise SequenceLostError(f"{lost}; {where} lost its state; pass --reconnect-attempts N "
                                    f"to reconnect and start a fresh sequence") from None
        self.log(f"{lost}; {where}: reconnecting (up to {attempts} attempts)")
        for attempt in range(1, attempts + 1):
            time.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            stream.sequence_id = None
            try:
                prediction = stream.client.infer(stream.request(frame))
            except SequenceLostError as err:
                lost = err
                continue
            stream.state_losses += 1
            stream.steps = 1
            self.log(f"  {stream.name}: reconnected on attempt {attempt}; a fresh sequence "
                     f"{stream.sequence_id} starts from the zero state")
            return prediction
        raise SequenceLostError(f"{lost}; {where} gave up after {attempts} reconnect attempts")

    def close(self) -> None:
        """End every open sequence (its last frame again, with END: the server frees its slot
        now rather than at the idle timeout), then close the connections."""
        for stream in self._streams:
            if stream.sequence_id is not None and stream.last_frame is not None:
                try:
                    stream.client.infer(stream.request(stream.last_frame, end=True))
                except StaeError:
                    pass                    # best effort: the idle timeout frees it anyway
        for client in self.clients:
            client.close()

    def __enter__(self) -> "ServedPredictor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
