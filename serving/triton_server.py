"""Run the real ``tritonserver`` that ships in the ``nvidia-pytriton`` wheel, on 127.0.0.1.

    with TritonServer(ServerSettings(Path("model_repository"))) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)

The wheel bundles tritonserver 2.51 with its Python backend and libraries; running it takes
what its documentation leaves out (``shared/notes/triton_local.md``): the bundled libraries on
``LD_LIBRARY_PATH``, the Python-backend stub for this Python beside the backend (here: in a
backend folder of links made per server, so the installed wheel is never modified), and this
environment's ``bin/`` first on ``PATH`` so that the stub's Python finds numpy, onnxruntime and
this package. Every endpoint binds 127.0.0.1: tritonserver binds 0.0.0.0 unless told.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stae_deploy.runtime.errors import ConfigError, StaeError

HOST = "127.0.0.1"
WHEEL = "nvidia-pytriton==0.7.0"
INSTALL_HINT = (f"the Triton server comes from the nvidia-pytriton wheel: `make install`, or "
                f"`pip install --no-deps {WHEEL}` (its numpy<2 pin would downgrade numpy)")


@dataclass(frozen=True)
class ServerSettings:
    """One tritonserver on 127.0.0.1.

    repository:      the model repository (`stae triton --backend python` writes one).
    http_port, grpc_port, metrics_port: TCP ports on 127.0.0.1, all different.
    ready_timeout_s: how long to wait for the server and every model to be ready, seconds.
    log_path:        the server's stdout and stderr go here (None: a file in a temp folder).
    """

    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    ready_timeout_s: float = 120.0
    log_path: Path | None = None

    def __post_init__(self) -> None:
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port,
                 "metrics_port": self.metrics_port}
        for field, port in ports.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"{field}: expected a TCP port 1..65535, got {port!r}")
        if len(set(ports.values())) != 3:
            raise ConfigError(f"http_port, grpc_port, metrics_port: expected three different "
                              f"ports, got {ports}")
        if self.ready_timeout_s <= 0:
            raise ConfigError(f"ready_timeout_s: expected > 0, got {self.ready_timeout_s}")


def bundled_server_dir() -> Path:
    """The wheel's ``pytriton/tritonserver`` folder; :class:`ConfigError` if not installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"tritonserver not found: {INSTALL_HINT}")
    server_dir = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (server_dir / "bin" / "tritonserver").is_file():
        raise ConfigError(f"{server_dir}: no bin/tritonserver in the pytriton package; "
                          f"{INSTALL_HINT}")
    return server_dir


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now.

    All probes stay bound until every port is chosen, so the system cannot hand out one port
    twice (probing one at a time can, and three servers then collide on it).
    """
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _require_free(port: int, field: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers bind
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ConfigError(f"{field}: port {port} on {HOST} is taken; choose another "
                              f"(--{field.replace('_', '-')})") from None


def _backend_dir(server_dir: Path, into: Path) -> Path:
    """A backends folder whose python/ links the wheel's backend and this Python's stub."""
    python_dir = into / "backends" / "python"
    python_dir.mkdir(parents=True)
    wheel_backend = server_dir / "backends" / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python_dir / name).symlink_to(wheel_backend / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ConfigError(f"{stub}: the wheel has no Python-backend stub for Python {version}")
    (python_dir / stub.name).symlink_to(stub)
    return into / "backends"


class TritonServer:
    """A running tritonserver; a context manager that stops it (SIGINT, then SIGKILL)."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        repository = settings.repository
        if not repository.is_dir():
            raise ConfigError(f"{repository}: expected a model repository directory "
                              f"(`stae triton MODEL.onnx -o {repository} --backend python`)")
        for field in ("http_port", "grpc_port", "metrics_port"):
            _require_free(getattr(settings, field), field)
        server_dir = bundled_server_dir()
        self._work = tempfile.TemporaryDirectory(prefix="stae-triton-")
        work = Path(self._work.name)
        self.log_path = settings.log_path or work / "tritonserver.log"
        libs = server_dir.parent.parent / "nvidia_pytriton.libs"
        env = dict(os.environ,
                   LD_LIBRARY_PATH=os.pathsep.join(filter(None, [
                       str(libs), os.environ.get("LD_LIBRARY_PATH")])),
                   PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                         os.environ.get("PATH", "")]))
        command = [str(server_dir / "bin" / "tritonserver"),
                   f"--model-repository={repository.resolve()}",
                   f"--backend-directory={_backend_dir(server_dir, work)}",
                   f"--http-address={HOST}", f"--grpc-address={HOST}",
                   f"--metrics-address={HOST}", f"--http-port={settings.http_port}",
                   f"--grpc-port={settings.grpc_port}",
                   f"--metrics-port={settings.metrics_port}", "--allow-gpu-metrics=false",
                   "--exit-on-error=true", "--strict-readiness=true"]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.settings.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.settings.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.settings.metrics_port}/metrics"

    def version(self) -> str:
        """The server's version (its metadata endpoint), e.g. "2.51.0"."""
        with urllib.request.urlopen(f"{self.http_url}/v2", timeout=10) as answer:
            return str(json.load(answer)["version"])

    def log_text(self) -> str:
        """What the server has written so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StaeError(f"tritonserver exited with code {self.process.returncode} "
                                f"before it was ready; its log ({self.log_path}) ends:\n"
                                + "\n".join(self.log_text().splitlines()[-15:]))
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise StaeError(f"tritonserver not ready after {self.settings.ready_timeout_s:g} s; "
                        f"its log: {self.log_path}")

    def stop(self) -> int:
        """Stop the server (SIGINT, then SIGKILL after 30 s); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._work.cleanup()
