"""Files in and out: bounded reads of every input file, and writes that a reader never sees half of and a
crash never loses the previous one."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Union

Data = Union[str, bytes, Iterable[str]]

# The modes of everything vmaudit creates, whatever the umask: findings are sensitive (CONTRACT.md 1.1).
# Every writer goes through atomic_write / atomic_write_at / make_dir / make_dir_at below.
FILE_MODE = 0o640
DIR_MODE = 0o750

# One limit for every file vmaudit reads as input (policy, guest inventory, host inventory, facts
# snapshots, reports to diff; vmaudit.schema's MAX_SNAPSHOT_BYTES is this one) and for a remote host's
# answer (vmaudit.fleet.ssh): input is not trusted to end, and /dev/zero never does.
MAX_INPUT_BYTES = 1 << 30
# Deeper nesting than any file vmaudit writes or reads has: parsers and the code walking parsed data
# recurse, and a file of brackets must be a one-line refusal, never a RecursionError.
MAX_DEPTH = 64
# Values in one JSON input, bounded before it is parsed: a file of 1 GiB may hold 300 million empty
# arrays, 20 GB once parsed. A 10,000-guest snapshot holds about 600,000.
MAX_JSON_VALUES = 10_000_000
_CHUNK = 1 << 20


def read_bounded(path: str | os.PathLike, what: str, error: type = ValueError,
                 limit: int | None = None) -> bytes:
    """The bytes of an input file, at most `limit` (default MAX_INPUT_BYTES).

    Raises `error` with one line naming the file and `what` when it cannot be read, is larger, or holds
    a NUL byte: no text format vmaudit reads has one, and checking each chunk refuses an endless device
    (/dev/zero, /dev/urandom) after its first megabyte instead of after the limit."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise error(f"{path}: cannot read {what}: is a directory")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise error(f"{path}: {what} is larger than {_size(limit)} ({_size(st.st_size)})")
            buf = bytearray()
            while True:
                chunk = fh.read(min(_CHUNK, limit + 1 - len(buf)))
                if not chunk:
                    break
                if b"\0" in chunk:
                    raise error(f"{path}: {what} holds binary data (a NUL byte at offset "
                                f"{len(buf) + chunk.index(0)})")
                buf += chunk
                if len(buf) > limit:
                    raise error(f"{path}: {what} is larger than {_size(limit)}")
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    return bytes(buf)


def read_text_bounded(path: str | os.PathLike, what: str, error: type = ValueError,
                      encoding: str = "utf-8") -> str:
    """read_bounded, decoded; a file that is not `encoding` raises `error` naming it."""
    data = read_bounded(path, what, error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read {what}: not UTF-8 text (byte {exc.start})") from None


def check_depth(value: object, source: str, what: str, error: type = ValueError,
                limit: int = MAX_DEPTH) -> None:
    """Raise `error` when lists and mappings in `value` nest deeper than `limit` (walked without
    recursion, so the check itself cannot overflow the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise error(f"{source}: {what} nests deeper than {limit} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def too_deep(source: str, what: str, error: type = ValueError) -> Exception:
    """The error for a parser that ran out of stack (RecursionError) on `source`."""
    return error(f"{source}: {what} nests deeper than {MAX_DEPTH} levels")


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def make_dir(path: str | os.PathLike, parents: bool = False) -> None:
    """Create a directory DIR_MODE whatever the umask (each missing parent too, with `parents`);
    an existing one is left as it is."""
    path = Path(path)
    if parents and not path.parent.exists() and path.parent != path:
        make_dir(path.parent, parents=True)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, DIR_MODE)


def make_dir_at(dir_fd: int, name: str) -> tuple[int, bool]:
    """Open (creating it DIR_MODE if missing) the directory `name` inside the directory `dir_fd`,
    never following a symbolic link. Returns (descriptor, created); a link raises IsALink."""
    created = False
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        pass
    fd = open_dir_at(dir_fd, name)
    if created:
        os.fchmod(fd, DIR_MODE)
    return fd, created


def create_file(path: str | os.PathLike) -> None:
    """Create an empty file FILE_MODE whatever the umask, unless it exists (for files another library
    then opens by path, such as an SQLite database; SQLite gives its journals the database's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


class IsALink(OSError):
    """An entry vmaudit would have followed is a symbolic link."""


def open_dir_at(dir_fd: int | None, name: str) -> int:
    """O_DIRECTORY|O_NOFOLLOW open of `name` (relative to dir_fd, or a path when dir_fd is None)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        # Linux answers ENOTDIR (with O_DIRECTORY) or ELOOP for a link: tell a link apart
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(name, dir_fd):
            raise IsALink(errno.ELOOP, "is a symbolic link", name) from None
        raise


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def atomic_write_at(dir_fd: int, name: str, data: Data, mode: int = FILE_MODE) -> None:
    """atomic_write inside the directory `dir_fd`, never following a link: the temporary file is created
    O_EXCL|O_NOFOLLOW, and renameat replaces the entry `name` itself (a link there is replaced, its
    target never touched)."""
    chunks = [data] if isinstance(data, (str, bytes)) else data
    tmp = f".{name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            _write_chunks(fh, chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(dir_fd)


def atomic_write(path: str | os.PathLike, data: Data, mode: int = FILE_MODE, durable: bool = True) -> None:
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
        os.chmod(tmp, mode)  # mkstemp's 0600 otherwise; the umask plays no part either way
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


# A JSON string, or the rest of the text after an unterminated one: the pattern matches wherever a
# string starts, so the search never fails and retries (time linear in the text).
_JSON_STRING = {str: re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.S),
                bytes: re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.S)}


def _value_bound(text: str | bytes) -> int:
    """1 + the `[`, `{` and `,` in `text`: every JSON value but the first opens an array or object or
    follows a comma."""
    marks = ("[", "{", ",") if isinstance(text, str) else (b"[", b"{", b",")
    return 1 + sum(text.count(mark) for mark in marks)


def check_json_values(text: str | bytes, source: str, what: str, error: type = ValueError) -> None:
    """Raise `error` unless the JSON `text` holds at most MAX_JSON_VALUES values, counted without parsing
    it. The marks are counted in the whole text first (fast); only when that exceeds the limit (marks
    inside strings, a description of commas, count there too) are the strings set aside and the marks
    counted again."""
    if _value_bound(text) <= MAX_JSON_VALUES:
        return
    kind = bytes if isinstance(text, (bytes, bytearray)) else str
    if _value_bound(_JSON_STRING[kind].sub('""' if kind is str else b'""', text)) > MAX_JSON_VALUES:
        raise error(f"{source}: {what} holds more than {MAX_JSON_VALUES:,} JSON values (the limit)")


def read_json(path: str, what: str, error: type = ValueError) -> object:
    """Parse a JSON file (read_bounded, check_json_values, check_depth); any failure raises `error` with
    one line naming the file (and line) and `what`."""
    text = read_text_bounded(path, what, error)
    text = text[1:] if text.startswith("\ufeff") else text  # a byte order mark, as json.loads(bytes) allows
    check_json_values(text, path, what, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}, line {exc.lineno}: not a JSON {what}: {exc.msg}") from None
    except RecursionError:
        raise too_deep(path, what, error) from None
    del text
    check_depth(data, path, what, error)
    return data
