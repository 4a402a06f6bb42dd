"""Joining a Ray cluster in bounded time: a dead or unreachable address is one line, not a hang.

`ray.init(address=...)` retries a cluster that does not answer for ever
("Failed to connect to GCS ... within 5 seconds", again and again), and so
does a driver refused by a cluster's token authentication. So the run first
opens a TCP connection to the address (`check_reachable`, before anything is
sent or written), and then gives `ray.init` `JOIN_S` to return (`join`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio

from llamabatch.errors import UsageError

CONNECT_S: Final = 5.0  # a TCP connection to the cluster's address
JOIN_S = 60.0  # ray.init, once the address accepts connections
POLL_S: Final = 0.05


def cluster_address(address: str | None) -> tuple[str, str] | None:
    """The address of the cluster to join and the setting that named it; None: a local one."""
    if address:
        return address, "--ray-address"
    if env := os.environ.get("RAY_ADDRESS", "").strip():
        return env, "RAY_ADDRESS"
    return None


def check_reachable(address: str | None) -> None:
    """Raise UsageError, in one line naming the address, when it accepts no connection."""
    named = cluster_address(address)
    if named is None:
        return
    where, setting = named
    if where in ("auto", "local"):  # Ray resolves these itself, on this machine
        return
    host, port = _host_port(where, setting)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise UsageError(
            f"{setting} {where}: no Ray cluster reachable there ({reason} within "
            f"{CONNECT_S:.0f} s); start one (ray start --head) or fix {setting}"
        ) from None


def _host_port(where: str, setting: str) -> tuple[str, int]:
    target = where.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"{setting} {where}: expected HOST:PORT (or ray://HOST:PORT)")
    return host.strip("[]"), int(port)


def _no_sigterm_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SIGTERM handler is not set")


async def join(
    ray: Any, address: str | None, local: Mapping[str, Any] | None = None, **options: Any
) -> None:
    """`ray.init(address, **options)`; UsageError if a cluster's address does not let it
    return within `JOIN_S` (a local cluster of our own is not bounded: it starts here).

    `local`: more options for a cluster of our own only (Ray refuses `_system_config`
    from a driver joining one, also when `RAY_ADDRESS` alone names it). Joining a cluster
    runs in a thread, which Ray leaves SIGTERM alone in: the run handles it as it
    handles Ctrl-C."""
    named = cluster_address(address)
    if named is None or named[0] == "local":
        # Here, not in a thread: the local cluster's processes die with the thread that
        # started them (Ray gives them PR_SET_PDEATHSIG, which is per thread).
        ray.init(address=address, **options, **(local or {}))
        return
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            ray.init(address=address, **options)
        except BaseException as exc:  # handed to the run's task, which raises it
            outcome.append(exc)
        else:
            outcome.append(None)

    # A daemon thread: one that never returns must not keep the process from exiting.
    logging.getLogger("ray._private.worker").addFilter(_no_sigterm_warning)
    threading.Thread(target=init, name="llamabatch-ray-init", daemon=True).start()
    deadline = time.monotonic() + JOIN_S
    while not outcome:
        if time.monotonic() > deadline:
            where, setting = named
            raise UsageError(
                f"{setting} {where}: the Ray cluster there did not let this driver join within "
                f"{JOIN_S:.0f} s (not a Ray head's port? a cluster with token authentication "
                "needs RAY_AUTH_MODE=token and its token; see the README)"
            )
        await anyio.sleep(POLL_S)
    failure = outcome[0]
    if isinstance(failure, Exception):
        where, setting = named
        line = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
        raise UsageError(f"{setting} {where}: cannot join the Ray cluster there: {line}")
    if failure is not None:
        raise failure
