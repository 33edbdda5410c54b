"""Small file helpers shared by every stage: content hashes, overwrite protection and atomic
writes."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

from runtime.errors import OutputExistsError


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk_bytes`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def refuse_overwrite(path: str | Path, force: bool) -> Path:
    """Return ``path`` as a Path; raise :class:`OutputExistsError` if it exists and not ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a sibling ``.partial`` path to write; it is renamed to ``path`` once written (and
    removed if writing fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
