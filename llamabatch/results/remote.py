"""Results on a `pyarrow.fs` filesystem (S3, GCS, HDFS, ...), behind a local staging directory.

A run whose output is a URI writes into a local staging directory (see
config/outputs.py) exactly as into a local output — journal segments first,
then Parquet parts — except that each part goes to the URI as it is made,
and the manifest lives there too. The staging directory's `_remote` file names
the URI: every function of this package that lists, reads or writes parts or
the manifest of the staging directory works on the URI's instead (`remote_of`).
So a killed process loses nothing (its journal is on the local disk, turned
into parts at the URI by the next run on that machine), and readers of the
URI (`pandas.read_parquet("s3://...")`, `report`, `compare`) see each part
whole: an object store shows an object whole or not at all; other filesystems
get a hidden temporary file renamed into place.

There is no `flock` on an object store: the run holds a lease instead, an
object `_lease.json` naming its holder, renewed every `LEASE_TTL_S / 3`. A
run refuses a URI whose lease is younger than `LEASE_TTL_S` (or held by a live
process of this machine). Unlike `flock` it is not exclusive for two runs
started within the same moment; they would write parts of their own and
duplicates would be dropped by key, at the cost of requests sent twice.

A renewal first reads the lease and rewrites it only while it still holds this
run's token: a run that could not renew for `LEASE_TTL_S` (a stalled network)
may find another run holding it. Then the lease is lost (`LeaseLost`): this
process writes nothing more to the URI (its rows stay in the local journal)
and the run stops. `pyarrow.fs` has no conditional write (S3's If-Match), so
the read and the write are two calls; a run taking the lease between them is
refused by its own second look (`acquire` reads the lease again after writing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from llamabatch.errors import LeaseLost, StorageError, UsageError

MARKER: Final = "_remote"
LEASE: Final = "_lease.json"
LEASE_TTL_S: Final = 60.0
RENEW_S = LEASE_TTL_S / 3  # how often the holder renews its lease
log = logging.getLogger(__name__)
_REMOTES: dict[tuple[str, tuple[tuple[str, str], ...]], Remote] = {}
_OBJECT_STORES: Final = frozenset({"s3", "gcs"})


def stage(output: Path, uri: str) -> None:
    """Make `output` the staging directory of `uri` (idempotent)."""
    output.mkdir(parents=True, exist_ok=True)
    marker = output / MARKER
    if not marker.exists() or marker.read_text(encoding="utf-8") != uri:
        tmp = output / f".{MARKER}.tmp"
        tmp.write_text(uri, encoding="utf-8")
        os.replace(tmp, marker)


def remote_of(output: Path) -> Remote | None:
    """The URI `output` stages for, or None for a local output."""
    try:
        uri = (output / MARKER).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    # The filesystem as the environment describes it now (credentials, endpoint).
    key = (uri, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    remote = _REMOTES.get(key)
    if remote is None:
        remote = _REMOTES[key] = Remote(uri)
    return remote


def shown(output: Path) -> str:
    """How to name `output` to a user: the URI it stages for, else the path."""
    remote = remote_of(output)
    return str(output) if remote is None else remote.uri


def shown_name(output: Path) -> str:
    """The last part of `shown(output)` (a label for its runs)."""
    return shown(output).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


class Remote:
    """The results folder at a URI: its parts, its manifest, its lease."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UsageError(f"output {uri}: {exc} (set [run] output, or --output)") from None
        self.root = root.rstrip("/")
        self._atomic = self.fs.type_name in _OBJECT_STORES
        self.lost: str | None = None  # why this process may no longer write here (`LeaseLost`)

    def writable(self) -> None:
        """Raise `LeaseLost` once another run holds this URI's lease."""
        if self.lost is not None:
            raise LeaseLost(self.lost)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def parts(self) -> list[str]:
        """The part files' paths on the filesystem, sorted."""
        return sorted(i.path for i in self._part_infos())

    def part_stamps(self) -> list[tuple[str, int, int]]:
        """Each part's name, size and modification time (ns): they change when a part does."""
        stamps = [(i.base_name, i.size, i.mtime_ns or 0) for i in self._part_infos()]
        return sorted(stamps)

    def _part_infos(self) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        with self.errors("list"):
            infos = self.fs.get_file_info(selector)
        return [
            i
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.startswith("part-")
            and i.base_name.endswith(".parquet")
        ]

    def exists(self, name: str) -> bool:
        with self.errors("read"):
            info = self.fs.get_file_info(self.path(name))
        return bool(info.type == pafs.FileType.File)

    def write_table(self, table: pa.Table, path: str) -> None:
        """Write (or replace) one part whole: readers never see half of it."""
        self.writable()
        with self.errors("write"):
            if self._atomic:
                pq.write_table(table, path, filesystem=self.fs, compression="zstd")
                return
            folder, _, name = path.rpartition("/")
            tmp = f"{folder}/.{name}.tmp"
            pq.write_table(table, tmp, filesystem=self.fs, compression="zstd")
            self.fs.move(tmp, path)

    def read(self, name: str) -> bytes | None:
        try:
            with self.errors("read"), self.fs.open_input_stream(self.path(name)) as stream:
                data: bytes = stream.read()
        except FileNotFoundError:
            return None
        return data

    def write(self, name: str, data: bytes) -> None:
        self.writable()
        with self.errors("write"), self.fs.open_output_stream(self.path(name)) as stream:
            stream.write(data)

    def delete(self, path: str) -> None:
        self.writable()
        with self.errors("delete"):
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                return

    def probe(self) -> None:
        """Write and delete an object here: bad credentials or a missing bucket fail now."""
        name = f".llamabatch-probe-{secrets.token_hex(4)}"
        try:
            self.fs.create_dir(self.root)
            with self.fs.open_output_stream(self.path(name)) as stream:
                stream.write(b"")
            self.fs.delete_file(self.path(name))
        except OSError as exc:
            raise UsageError(
                f"output {self.uri}: cannot write there: {_first_line(exc)} "
                "(check the URI and the filesystem's credentials, e.g. AWS_* variables)"
            ) from None

    def errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _failing_as_storage(f"cannot {doing} {self.uri}")


@contextlib.contextmanager
def _failing_as_storage(what: str) -> Iterator[None]:
    """A failed filesystem call as `StorageError`: one line naming the URI."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageError(f"{what}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Lease:
    """The lock of a remote output (see the module docstring)."""

    def __init__(self, remote: Remote, holder: str) -> None:
        self.remote = remote
        self.record = {
            "holder": f"llamabatch {holder} (pid {os.getpid()} on {socket.gethostname()})",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": secrets.token_hex(8),
        }
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        self._refuse_if_held()
        self.remote.lost = None  # an earlier run of this process lost it; this one holds it
        self._write()
        self._refuse_if_held()  # another run wrote its lease over ours at the same moment
        self._renewer = threading.Thread(target=self._renew, name="llamabatch-lease", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join()
        self._renewer = None
        if self.remote.lost is not None:
            return  # another run's now
        current = self._read()
        if current is not None and current.get("token") == self.record["token"]:
            self.remote.delete(self.remote.path(LEASE))

    def _refuse_if_held(self) -> None:
        current = self._read()
        if current is None or current.get("token") == self.record["token"]:
            return
        age = time.time() - float(current.get("renewed", 0))
        same_host = current.get("host") == self.record["host"]
        if age >= LEASE_TTL_S or (same_host and not _alive(int(current.get("pid", 0)))):
            return  # its holder stopped renewing it, or died on this machine
        raise UsageError(
            f"{self.remote.uri} is in use by {current.get('holder', 'another llamabatch run')} "
            f"(lease renewed {age:.0f} s ago; it lapses {LEASE_TTL_S:.0f} s after its holder "
            "stops); wait for it to finish, or write elsewhere (--output)"
        )

    def _read(self) -> dict[str, Any] | None:
        data = self.remote.read(LEASE)
        if data is None:
            return None
        try:
            record: dict[str, Any] = json.loads(data)
        except ValueError:
            return None
        return record

    def _write(self) -> None:
        record = {**self.record, "renewed": time.time()}
        self.remote.write(LEASE, json.dumps(record).encode())

    def renew(self) -> bool:
        """Rewrite the lease if it is still this run's; False (and `remote.lost` set) if not."""
        try:
            current = self._read()
        except StorageError as exc:
            log.warning("could not renew the lease on %s: %s", self.remote.uri, exc)
            return True  # not known to be lost: try again at the next renewal
        if current is None or current.get("token") != self.record["token"]:
            holder = "no one (its lease was deleted)"
            if current is not None:
                holder = str(current.get("holder", "another llamabatch run"))
            self.remote.lost = (
                f"{self.remote.uri}: this run lost its lease (not renewed for "
                f"{LEASE_TTL_S:.0f} s?) and {holder} holds it now; it stopped and writes nothing "
                "more there (its rows stay in the local journal)"
            )
            return False
        try:
            self._write()
        except StorageError as exc:
            log.warning("could not renew the lease on %s: %s", self.remote.uri, exc)
        return True

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            if not self.renew():
                return


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
