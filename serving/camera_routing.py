"""Which Triton server a camera's sequence goes to, when there are several.

A sequence's recurrent state lives on the server that started it, so every frame of a camera
must go to the same server. :func:`server_for` picks it by rendezvous (highest-random-weight)
hashing of the camera's ID: every client computes the same choice with no coordination, and
adding or removing a server moves only the cameras whose best server changed (about 1/N of
them), not almost all of them as ``hash(camera) % N`` would.

    servers = ["127.0.0.1:8001", "127.0.0.1:9001"]
    server_for("rtsp://cam-7/stream", servers)       # the same answer in every process
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from stae_deploy.runtime.errors import ConfigError


def _weight(camera_id: str, server: str) -> int:
    digest = hashlib.sha256(f"{server}\n{camera_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def server_for(camera_id: str, servers: Sequence[str]) -> str:
    """The server (one of ``servers``, e.g. host:port strings) that serves ``camera_id``: the
    one with the highest sha256 weight of (server, camera). Stable across processes and runs."""
    if not servers:
        raise ConfigError("servers: give at least one server to route cameras to")
    if len(set(servers)) != len(servers):
        raise ConfigError(f"servers: each server once, got {list(servers)}")
    return max(servers, key=lambda server: _weight(camera_id, server))
