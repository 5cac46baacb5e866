"""Atomic file writes: a reader, or a process started after this one is killed at any moment,
sees a file's old content or its complete new content, never part of it.

Checkpoints, ``last_checkpoint``, a sweep run's ``RUN.json``/``DONE.json``/``FAILED.json``
and the model-zoo catalog are written this way. A file is filled under a temporary name in
its own folder (a rename is atomic only within one file system), flushed, fsynced, renamed
over its final name, and then the folder is fsynced, since the rename is durable only once
the folder's entry is on disk. The temporary name carries the writer's host and pid, so a
later run can tell a killed writer's leftovers from a live writer's file
(``stale_temporary_files``), also when several machines share the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_directory",
    "fsync_file",
    "stale_temporary_files",
]

PathLike = str | os.PathLike
"""A path as ``open`` takes it."""

_HOST = socket.gethostname()
_STALE = re.compile(rf"^\..+\.{re.escape(_HOST)}\.(?P<pid>\d+)\.tmp$")


def _temporary_name(path: str) -> str:
    # Hidden, beside the file, and marked with host and pid (see the module docstring).
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{_HOST}.{os.getpid()}.tmp")


def fsync_file(f: IO[Any]) -> None:
    """Flush the open file ``f`` and have the operating system write it to disk."""
    f.flush()
    os.fsync(f.fileno())


def fsync_directory(folder: PathLike) -> None:
    """Write the entries of ``folder`` to disk (what makes a rename in it durable); a no-op
    where the operating system cannot open a folder for that (not POSIX)."""
    if os.name != "posix":
        return
    fd = os.open(os.fspath(folder) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace the local file ``path`` with what ``write(file)`` writes to the
    binary file it is given, atomically.

    ``write`` fills a temporary file beside ``path``, which is flushed, fsynced and renamed
    over ``path``; then the folder is fsynced. If ``write`` raises (or the process is
    interrupted), the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    temporary = _temporary_name(path)
    try:
        with open(temporary, "wb") as f:
            write(f)
            fsync_file(f)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    fsync_directory(os.path.dirname(path))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Create or replace the file ``path`` with ``data``, atomically (``atomic_write``)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Create or replace the file ``path`` with ``text`` in ``encoding``, atomically
    (``atomic_write``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, data: Any) -> None:
    """Create or replace the file ``path`` with ``data`` as strict JSON (indented, sorted
    keys, one trailing newline), atomically (``atomic_write``).

    Raises:
        ValueError: ``data`` holds NaN or an infinity, which strict JSON cannot hold;
            nothing is written.
    """
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_temporary_files(folder: PathLike) -> list[str]:
    """The temporary files of ``atomic_write`` in ``folder`` that a process of this host left
    behind when it was killed (its pid no longer runs). Files of live processes and of
    other hosts are not listed; nor is anything when ``folder`` cannot be read."""
    folder = os.fspath(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [
        os.path.join(folder, name)
        for name in sorted(names)
        if (match := _STALE.match(name)) and not _pid_is_alive(int(match["pid"]))
    ]
