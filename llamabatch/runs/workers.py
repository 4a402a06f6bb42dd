"""`[engine] workers = N`: the engine in N processes sharing one run's limits.

The parent keeps what makes it one run: the output directory's lock, the
validation and resume scan, the manifest, the progress bar, and the
coordinator (`LimitHub`) that every worker leases its permits from and
reports its outcomes to. Each worker journals its own rows (see workerproc).

A worker that dies (SIGKILL, out of memory) costs only its requests in
flight: the parent turns what it journalled into parts and starts it again,
and the new one skips every row already stored. A worker that raises is a bug,
not an interruption: the run fails (WorkerFailed) rather than start it again.
A parent that dies takes its
workers with it: they see their socket close and stop; they hold the
directory's lock until they exit, and the next run's repair of the
directory turns their journals into parts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio

from llamabatch.config import RunConfig
from llamabatch.engine import Observer
from llamabatch.engine.coordinator import LimitHub
from llamabatch.engine.lane import model_limits
from llamabatch.errors import RequestError
from llamabatch.prompts import ScanReport
from llamabatch.results import DoneIndex, ResultWriter
from llamabatch.results.journal import recover_writer
from llamabatch.results.parts import dedupe
from llamabatch.runs.channel import Channel
from llamabatch.runs.share import worker_spec

log = logging.getLogger(__name__)
MAX_RESTARTS: Final = 3  # per worker; a worker that keeps dying ends the run's share of it
EXIT_WAIT_S: Final = 30.0  # after `cancel`, how long a worker may take to write and exit
REAP_POLL_S: Final = 0.01


class WorkerFailed(RuntimeError):
    """A worker process ended with an exception: a bug, not an interruption (a new one
    would fail alike), so the run fails, where a worker killed by a signal is started again."""


class WorkerPool:
    """Runs a config's work in `config.engine.workers` processes (the engine's interface)."""

    def __init__(
        self,
        *,
        config: RunConfig,
        writer: ResultWriter,
        done: DoneIndex,
        scan: ScanReport,
        only: Callable[[str], bytearray | None],
        tally: Observer,
        keep_errors: bool,
        cache_endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.cache_endpoints = dict(cache_endpoints or {})
        self.writer = writer
        self.done = done
        self.scan = scan
        self.only = {m.name: only(m.name) for m in config.models}
        self.tally = tally
        self.keep_errors = keep_errors
        self.hub = LimitHub([model_limits(m, config) for m in config.models])
        self.stopping = anyio.Event()
        self.restarts = 0
        self.clients: list[dict[str, Any]] = []  # each worker process's figures (monitor)
        self._channels: dict[int, Channel] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def stop(self) -> None:
        """Admit no new work in any worker; requests in flight finish."""
        self.stopping.set()
        if self._tg is not None:
            for channel in self._channels.values():
                self._tg.start_soon(_send_quietly, channel, "stop")

    async def run(self) -> None:
        count = self.config.engine.workers
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for index in range(count):
                    tg.start_soon(self._keep, index, count)
        finally:
            self._tg = None
            if self.restarts or self.done.errors:
                # A restarted worker (or a resent error row) may have written a key twice.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(dedupe, self.config.output)

    async def _keep(self, index: int, count: int) -> None:
        """Run worker `index`, starting it again when it dies (its journal kept)."""
        for attempt in range(MAX_RESTARTS + 1):
            writer_id = f"{self.writer.run_id}_w{index}" + (f"r{attempt}" if attempt else "")
            exitcode = await self._run_one(index, count, writer_id)
            if exitcode == 0:
                return
            output = self.config.output
            with anyio.CancelScope(shield=True):
                kept = await anyio.to_thread.run_sync(recover_writer, output, writer_id)
            if exitcode > 0:  # it raised (its traceback is above): a new one would fail alike
                self.stopping.set()
                raise WorkerFailed(
                    f"worker {index} failed (exit code {exitcode}): see its traceback above; "
                    f"its {kept} journalled rows are kept"
                )
            if self.stopping.is_set():
                return
            log.warning(
                "worker %d died (exit code %s); its %d journalled rows are kept%s",
                index,
                exitcode,
                kept,
                "; starting it again" if attempt < MAX_RESTARTS else "; giving up on its share",
            )
            self.restarts += 1
        self.stopping.set()  # its share is not done: the run ends as interrupted

    async def _run_one(self, index: int, count: int, writer_id: str) -> int:
        """One worker process from start to exit; its exit code."""
        ours, theirs = socket.socketpair()
        spec = worker_spec(
            self.writer,
            self.config,
            self.scan,
            self.only,
            self.keep_errors,
            index=index,
            count=count,
            writer_id=writer_id,
            cache_endpoints=self.cache_endpoints,
        )
        # A fresh interpreter, not multiprocessing: a caller's script needs no __main__ guard.
        fd = theirs.fileno()
        argv = [sys.executable, "-m", "llamabatch.runs.workerproc", str(fd)]
        # The directory's lock goes with it (see ResultWriter.lock_fd); the child keeps it open.
        lock = () if self.writer.lock_fd is None else (self.writer.lock_fd,)
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(fd, *lock))
        theirs.close()
        assert process.stdin is not None
        with process.stdin as stdin:
            stdin.write(pickle.dumps(spec))
        channel = await Channel.open(ours)
        self._channels[index] = channel
        client = {"worker": index, "writer_id": writer_id}
        if self.stopping.is_set():
            await _send_quietly(channel, "stop")
        try:
            await self._serve(channel, client)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await _send_quietly(channel, "cancel")
                # Rows of the cancelled requests are written before the worker exits.
                with anyio.move_on_after(EXIT_WAIT_S):
                    await self._serve(channel, client)
            raise
        finally:
            del self._channels[index]
            with anyio.CancelScope(shield=True):
                try:
                    usage = await anyio.to_thread.run_sync(_reap, process, EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    usage = await anyio.to_thread.run_sync(_reap, process, None)
                await channel.aclose()
            cpu_s = round(usage.ru_utime + usage.ru_stime, 3)
            self.clients.append({**client, "exit_code": process.returncode, "cpu_s": cpu_s})
        return process.returncode

    async def _serve(self, channel: Channel, client: dict[str, Any]) -> None:
        """Answer a worker's calls and take its progress until it closes its end; its
        monitor's figures, sent as it exits, go into `client`."""
        async with anyio.create_task_group() as tg:
            while (message := await channel.receive()) is not None:
                kind = message[0]
                if kind == "call":
                    tg.start_soon(self._answer, channel, message[1], message[2], message[3])
                elif kind == "client":
                    figures = {k: v for k, v in message[1].items() if k != "sources"}
                    del figures["cpu_s"]  # the kernel's account, when it exits, replaces it
                    client.update(figures)
                else:
                    deliver(self.tally, message)
            tg.cancel_scope.cancel()  # calls of a worker that is gone need no answer

    async def _answer(self, channel: Channel, call_id: int, method: str, args: list[Any]) -> None:
        result = await self.hub.call(method, *args)
        await _send_quietly(channel, "reply", call_id, result)


def _reap(process: subprocess.Popen[bytes], timeout: float | None) -> resource.struct_rusage:
    """Wait for `process` to exit, as `Popen.wait` does; the kernel's account of its resources.

    (`wait4` of that one child: a worker killed mid-run is counted too.)
    """
    if timeout is None:
        _, status, usage = os.wait4(process.pid, 0)
    else:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(process.args, timeout)
            time.sleep(REAP_POLL_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage


def deliver(observer: Observer, message: list[Any]) -> None:
    """Hand a worker's progress message (see share.Progress) to the run's observer."""
    kind = message[0]
    if kind == "rows":
        for model, status, error_type, tokens, cached in message[1]:
            observer.on_row(_row(model, status, error_type, tokens, cached))
    elif kind == "retry":
        _, model, error_type, text, delay_s = message
        observer.on_retry(model, RequestError(error_type, text), delay_s)
    elif kind == "stopped":
        _, model, error_type, text, status = message
        notify = getattr(observer, "on_model_stopped", None)
        if notify is not None:
            notify(model, RequestError(error_type, text, http_status=status))


def _row(
    model: str, status: str, error_type: str | None, tokens: int | None, cached: bool
) -> Mapping[str, Any]:
    """What observers read of a row that a worker wrote (not the whole row)."""
    return {
        "model": model,
        "status": status,
        "error_type": error_type,
        "completion_tokens": tokens,
        "cached": cached,
    }


async def _send_quietly(channel: Channel, *message: Any) -> None:
    """Send, unless the worker is gone already (then there is no one to tell)."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await channel.send(*message)
