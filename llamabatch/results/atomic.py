"""Replace a file so that a crash leaves the old or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from llamabatch.errors import StorageError


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` a sibling temporary file, fsync it, rename it over `path`, fsync the folder.

    A failed write (a full disk) removes the temporary file and leaves `path` as it was.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def storage_error(path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def storage(path: Path) -> Iterator[None]:
    """Raise a failed write to `path` (a full disk) as `StorageError`: one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise storage_error(path, exc) from None


def write_all(fd: int, data: bytes) -> None:
    """`os.write` every byte: a short write (a disk filling up) is followed by the rest, or
    by the error that stops it."""
    done = os.write(fd, data)
    while done < len(data):
        done += os.write(fd, memoryview(data)[done:])
