"""Small file helpers shared by every stage: content hashes, overwrite protection, atomic
writes (a file gets its final name only once complete) and a first-bytes guess at what a wrong
file is, for error messages."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

from stae_deploy.runtime.errors import OutputExistsError


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


def partial_path(path: Path, keep_suffix: bool = False) -> Path:
    """The sibling name a file is written under until it is complete.

    ``out.json`` -> ``out.json.partial``; with ``keep_suffix`` ``out.mp4`` ->
    ``out.mp4.partial.mp4``, for writers that choose the format from the last extension (OpenCV's
    VideoWriter picks the container from it; ``numpy.savez`` appends ``.npz`` when it is absent).
    Either way a half-written file never has the final name, and its name says it is partial.
    """
    return path.with_name(path.name + ".partial" + (path.suffix if keep_suffix else ""))


@contextlib.contextmanager
def atomic_path(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a sibling :func:`partial_path` to write; it is renamed to ``path`` once written (and
    removed if writing fails). A process killed while writing leaves only the partial name.

    Streamed files work too: open the yielded path, write record after record, and the final name
    appears only when the ``with`` block ends normally.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, keep_suffix)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


# Leading bytes of formats people mistake for a model or a video, and what to call them.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"PK\x03\x04", "a ZIP archive (a PyTorch checkpoint?)"),
    *((0, bytes([0x80, protocol]), "a Python pickle (a PyTorch checkpoint?)")
      for protocol in range(2, 6)),
    (0, b"\x89HDF", "an HDF5 file (a Keras model?)"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x7fELF", "an executable"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (4, b"ftyp", "an MP4/QuickTime video"),
    (0, b"RIFF", "a RIFF file (AVI video or WAV audio)"),
)


def sniff_format(path: str | Path) -> str | None:
    """What ``path`` looks like from its first bytes ("a PNG image", "a text file"), or None.

    Only for error messages, after a real loader has refused the file: a guess, never a check.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return None
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = ""   # (a multi-byte character cut at byte 512 is rare enough to ignore)
        if text and all(c.isprintable() or c in "\t\r\n" for c in text):
            return "a JSON file" if text.lstrip()[:1] in ("{", "[") else "a text file"
    return None
