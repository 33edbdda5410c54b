"""``stae serve REPO``: the tritonserver of the nvidia-pytriton wheel on 127.0.0.1 for a model
repository (``stae triton MODEL.onnx -o REPO --backend python``), until SIGINT or SIGTERM
(``stae_deploy.serving.triton_server``)."""
from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from stae_deploy.serving.triton_server import ServerSettings, TritonServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The repository, the three ports and the readiness timeout."""
    defaults = ServerSettings(Path("."))
    parser.add_argument("repository", type=Path, help="the model repository folder")
    parser.add_argument("--http-port", type=int, default=defaults.http_port)
    parser.add_argument("--grpc-port", type=int, default=defaults.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port)
    parser.add_argument("--ready-timeout-s", type=float, default=defaults.ready_timeout_s,
                        help="give up if the server and its models are not ready by then")
    parser.add_argument("--log", type=Path, default=None,
                        help="write the server's log here (default: a temporary file)")


def run(args: argparse.Namespace) -> int:
    """Start the server, print its endpoints (JSON), serve until SIGINT/SIGTERM, stop it."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    settings = ServerSettings(args.repository, args.http_port, args.grpc_port,
                              args.metrics_port, args.ready_timeout_s, args.log)
    with TritonServer(settings) as server:
        print(json.dumps({"grpc": server.grpc_url, "http": server.http_url,
                          "metrics": server.metrics_url, "log": str(server.log_path)}),
              flush=True)
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                print(f"stae serve: tritonserver exited with code {server.process.returncode}; "
                      f"its log: {server.log_path}")
                return 1
    return 0
