"""Writing files so that a reader never sees half of one and a crash never loses the previous one."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Union

Data = Union[str, bytes, Iterable[str]]


def atomic_write(path: str | os.PathLike, data: Data, mode: int = 0o640, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the directory.

    `data` is text, bytes, or an iterable of text pieces (written as they come). A symbolic link is
    followed (the file it points to is replaced, the link stays); a path that is not a regular file
    (`/dev/null`, `/dev/stdout`, a FIFO) is written in place: renaming over it would replace a device.
    `durable=False` skips the two fsyncs (a reader still never sees half a file), for writers of many
    files that make them durable at once afterwards (sync_tree)."""
    chunks = [data] if isinstance(data, (str, bytes)) else data
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "wb") as fh:
                _write_chunks(fh, chunks)
            return
    except FileNotFoundError:
        pass
    path = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_chunks(fh, chunks)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sync_tree(path: str | os.PathLike) -> None:
    """Make everything written on the file system holding `path` durable: one syncfs(2) instead of
    two fsyncs per file (os.sync() where syncfs is not available)."""
    import ctypes

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _write_chunks(fh, chunks: Iterable[str | bytes]) -> None:
    for chunk in chunks:
        # file names from the audited host may not be UTF-8 (surrogate-escaped by Python):
        # written as \udcXX escapes, which JSON reads back and a person can still see
        fh.write(chunk.encode("utf-8", "backslashreplace") if isinstance(chunk, str) else chunk)


def read_json(path: str, what: str, error: type = ValueError) -> object:
    """Parse a JSON file; any failure raises `error` with one line naming the file (and line) and `what`."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise error(f"{path}{f', line {line}' if line else ''}: not a JSON {what}: "
                    f"{getattr(exc, 'msg', exc)}") from None
