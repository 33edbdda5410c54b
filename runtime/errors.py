"""Typed user errors for the whole toolkit, in one place.

Every error a user can cause (a bad config value, a wrong frame, an artifact that does not match
its protocol, footage that cannot be fetched) is a subclass of :class:`StaeError` whose message
names the field, tensor or file and says what was expected. Bugs are not ``StaeError``s.

:func:`exit_code_of` is the one boundary where a user error becomes a message and an exit code:
the ``stae`` command and every benchmark script go through it.
"""
from __future__ import annotations

import sys
from typing import Callable

USER_ERROR_EXIT_CODE = 2


class StaeError(Exception):
    """Base class of every error caused by user input; the CLI prints these without a traceback."""


class ConfigError(StaeError, ValueError):
    """A configuration value is invalid; the message names the field(s)."""


class ProtocolError(StaeError, ValueError):
    """A state-protocol document is malformed or inconsistent; the message names the tensor."""


class FrameFormatError(StaeError, ValueError):
    """A frame or state tensor has the wrong shape or dtype; the message names the tensor."""


class CheckpointError(StaeError):
    """A checkpoint file is missing, truncated or not a stae-deploy checkpoint."""


class FootageError(StaeError):
    """Real footage could not be fetched, verified or decoded; names the package and cache path."""


class OutputExistsError(StaeError, FileExistsError):
    """Refusing to overwrite a file the user already has (pass --force to allow it)."""


class ArtifactError(StaeError):
    """A model artifact (ONNX file, engine, sidecar) is missing, truncated, foreign or lacks metadata."""


class SpecMismatchError(StaeError):
    """An artifact's real inputs/outputs differ from the state protocol stored with it."""


class TensorRTUnavailableError(StaeError):
    """TensorRT (or a CUDA device) is not available on this machine."""


class EngineBuildError(StaeError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


class NonFiniteStateError(StaeError):
    """The model produced NaN/Inf; the stream's state was reset (the message gives the count)."""


class BrokenModelError(StaeError):
    """The model produced NaN/Inf over several steps in a row from a freshly reset state."""


class SourceError(StaeError):
    """A video source cannot be opened, or disappeared and did not come back."""


class SequenceLostError(StaeError):
    """A server lost a stream's state: it is down, it restarted, or the sequence idled out."""


class CudaError(StaeError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


class CalibrationError(StaeError):
    """A calibration file is missing, foreign to the model, or does not match its protocol."""


def exit_code_of(program: str, command: Callable[[], int | None]) -> int:
    """Run ``command`` and return its exit code (None counts as 0).

    A :class:`StaeError` prints one line, ``{program}: error: {message}``, on stderr and returns
    :data:`USER_ERROR_EXIT_CODE`; anything else is a bug and keeps its traceback.
    """
    try:
        return int(command() or 0)
    except StaeError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
