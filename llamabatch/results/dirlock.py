"""One writer per results directory: the lock a run or `llamabatch score` holds throughout.

The lock is an `flock` on `OUTPUT/.lock`, taken before anything in the
directory is deleted or written and held until the last write (a run's
re-scoring and judges included). The file is never unlinked: a process
waiting on a deleted lock file would hold a lock nobody else can see, and two
writers would both think they were alone. It holds the holder's command and
pid, so a refused writer can say who is in the way. A staging directory
(results/remote.py) also takes the lease of the URI it stages for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Final

from llamabatch.errors import UsageError
from llamabatch.results.remote import Lease, remote_of

LOCK_FILE: Final = ".lock"


class DirectoryLock:
    """`with DirectoryLock(output, "run"):` holds the lock while in the block.

    A directory that does not exist yet is locked when it is created (`acquire`).
    """

    def __init__(self, output: Path, holder: str) -> None:
        self.output = output
        self.holder = holder
        self._fd: int | None = None
        self._lease: Lease | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def fd(self) -> int | None:
        """The locked descriptor (a worker process given a copy holds the lock too)."""
        return self._fd

    def acquire(self) -> None:
        """Take the lock (the directory must exist) or raise UsageError naming its holder."""
        if self._fd is not None:
            return
        path = self.output / LOCK_FILE
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            message = f"output {self.output}: cannot create {path}: {exc.strerror}"
            raise UsageError(message) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise UsageError(
                f"{self.output} is in use by {holder or 'another llamabatch run'}; wait for it "
                "to finish, or write elsewhere (--output)"
            ) from None
        with contextlib.suppress(OSError):  # only a courtesy for the refused: never fatal
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"llamabatch {self.holder} (pid {os.getpid()})\n".encode(), 0)
        remote = remote_of(self.output)
        if remote is not None:  # a staging directory: the results' URI has a lease too
            lease = Lease(remote, self.holder)
            try:
                lease.acquire()
            except BaseException:
                os.close(fd)
                raise
            self._lease = lease
        self._fd = fd

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (see the module docstring)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        if self.output.is_dir():
            self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
