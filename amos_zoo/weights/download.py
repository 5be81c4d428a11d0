"""Fetching weight files: a cache under ``$AMOS_ZOO_HOME``, SHA-256 verification, local paths and file:// URLs.

HTTP(S) downloads go through pooch: it downloads into a temporary file beside the target, checks the hash,
and only then renames it into place; a hash mismatch raises and leaves nothing in the cache; an interrupted
download leaves only the temporary file, removed, so the next call starts again. Local paths and file://
URLs are read where they are (no copy), verified the same way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["cache_dir", "sha256_of", "md5_of", "fetch", "HashMismatchError"]


class HashMismatchError(ValueError):
    """A file's SHA-256 differs from the expected one."""


def cache_dir() -> Path:
    """Where downloaded weights live: ``$AMOS_ZOO_HOME/weights``, default ``~/.cache/amos-zoo/weights``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "amos-zoo"
    root = os.environ.get("AMOS_ZOO_HOME") or default
    return Path(root) / "weights"


def _digest(path: str | Path, algorithm: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file (streamed)."""
    return _digest(path, "sha256")


def md5_of(path: str | Path) -> str:
    """Hex MD5 of a file (streamed): only for sources that state nothing stronger."""
    return _digest(path, "md5")


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "file")


def fetch(source: str | Path, sha256: str | None = None, *, md5: str | None = None, progress: bool = True) -> Path:
    """A local path for ``source`` (path, file:// or http(s) URL), verified against ``sha256`` (or, only where a
    source states nothing stronger, ``md5``) when given.

    HTTP(S) files are downloaded once into :func:`cache_dir` (atomically, with a progress bar); later calls
    reuse the cached file after checking its hash (a corrupted cache entry is downloaded again).

    Raises:
        FileNotFoundError: a local path or file:// URL that does not exist.
        HashMismatchError: the file's digest differs from the expected one.
    """
    source = str(source)
    algorithm, expected = ("sha256", sha256.lower()) if sha256 else ("md5", md5.lower()) if md5 else (None, None)
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return _download(source, algorithm, expected, progress)
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{source}: weights file not found")
    if expected is not None and path.is_file():
        actual = _digest(path, algorithm)
        if actual != expected:
            raise HashMismatchError(
                f"{source}: {algorithm.upper()} is {actual}, expected {expected}; the file is not the one named"
            )
    return path


def _download(url: str, algorithm: str | None, expected: str | None, progress: bool) -> Path:
    import pooch

    name = Path(unquote(urlparse(url).path)).name or "weights.bin"
    fname = f"{expected[:16]}-{name}" if expected else name
    target_dir = cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"{algorithm}:{expected}" if expected else None,
            fname=fname,
            path=target_dir,
            downloader=pooch.HTTPDownloader(progressbar=progress, timeout=60),
        )
    except ValueError as err:  # pooch's hash mismatch; its temporary file is already gone
        if "hash" in str(err).lower():
            raise HashMismatchError(
                f"{url}: the downloaded file's {algorithm.upper()} differs from {expected}; nothing was kept in "
                f"{target_dir}. The file at this address changed or the download was tampered with."
            ) from err
        raise
    return Path(path)
