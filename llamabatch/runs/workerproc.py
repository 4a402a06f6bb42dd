"""A worker process of a run with `[engine] workers` > 1 (started by runs/workers.py).

It runs one share of the run (see runs/share.py); its coordinator calls and
its progress travel on a socket to the parent. SIGINT is the parent's to
handle, and SIGTERM too: it sends `stop` (admit nothing new) and then `cancel`;
a parent that disappears is taken as `cancel`.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import sys
from typing import Any

import anyio
import anyio.abc

from llamabatch.runs.channel import Channel
from llamabatch.runs.gcsetting import tune_for_the_engine
from llamabatch.runs.share import ShareRun, WorkerSpec

PROGRESS_INTERVAL_S = 0.1


def main(argv: list[str]) -> None:
    """`python -m llamabatch.runs.workerproc FD`: the pickled spec on stdin, the socket at FD."""
    spec: WorkerSpec = pickle.load(sys.stdin.buffer)
    # The parent decides (it sends stop, then cancel), also when a SIGTERM reaches the
    # whole process group (systemd's KillMode=control-group, kill -TERM -PGID).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level, format=f"%(levelname)s worker {spec.index}: %(message)s"
    )
    tune_for_the_engine()  # this process is ours, as the command line's is
    anyio.run(_work, spec, socket.socket(fileno=int(argv[0])))


async def _work(spec: WorkerSpec, sock: socket.socket) -> None:
    channel = await Channel.open(sock)
    run = ShareRun(spec, channel)

    def handle(message: list[Any]) -> None:
        if message[0] == "stop":
            run.stop()
        elif message[0] == "cancel":
            run.cancel()

    async def serve() -> None:
        await channel.serve(handle)
        run.cancel()  # the parent is gone: stop as a second Ctrl-C would

    async def report() -> None:
        while True:
            await anyio.sleep(PROGRESS_INTERVAL_S)
            await _send_progress(channel, run)

    def beside(tg: anyio.abc.TaskGroup) -> None:
        tg.start_soon(serve)
        tg.start_soon(report)

    try:
        await run.run(beside)
    finally:
        with anyio.CancelScope(shield=True):
            if not channel.closed:
                await _send_progress(channel, run)
                await channel.send("client", run.monitor.report(sent=run.progress.count))
                await channel.send("done")
            await channel.aclose()


async def _send_progress(channel: Channel, run: ShareRun) -> None:
    with anyio.CancelScope(shield=True):  # taken events must not be lost half sent
        for message in run.progress.take():
            await channel.send(*message)


if __name__ == "__main__":
    main(sys.argv[1:])
