"""Scaling sections of benchmarks/run.py: worker processes, and limits shared between them.

All run `llamabatch run` as a whole process tree (the parent and its
workers); CPU is user + sys of the tree, from wait4 once all have exited.
The clients are not pinned to a core here: workers must be free to use both.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from run import (
    PY,
    llamabatch_config,
    server,
    spread,
    static_server,
    write_prompts,
)


@dataclass
class Tree:
    cpu_s: float  # user + sys of the process and every child it waited for
    wall_s: float
    active_s: float  # first request's start to last response's end (rows' own times)
    server_cpu_s: float


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tree(config: Path, output: Path, server_pid: int | None, *flags: str) -> Tree:
    """`llamabatch run` unpinned; its tree's CPU, wall time, and the server's CPU meanwhile."""
    import pyarrow.parquet as pq

    argv = [PY, "-m", "llamabatch.cli", "run", str(config), "-q", "--no-check", *flags]
    server_before = _proc_cpu_s(server_pid) if server_pid else 0.0
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"llamabatch run failed: {err.read()[-2000:]}")
    server_cpu = (_proc_cpu_s(server_pid) - server_before) if server_pid else 0.0
    table = pq.read_table(output, columns=["started_at", "finished_at"])
    first = min(table["started_at"].to_pylist())
    active = (max(table["finished_at"].to_pylist()) - first).total_seconds()
    return Tree(usage.ru_utime + usage.ru_stime, wall, active, server_cpu)


def workers_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Responses/s and CPU per response with workers = 2 against workers = 1, side by side."""
    n, c = args.requests, 64
    prompts = write_prompts(workdir / "workers.jsonl", n)
    rates: dict[int, list[float]] = {1: [], 2: []}
    steady: dict[int, list[float]] = {1: [], 2: []}
    total: dict[int, list[float]] = {1: [], 2: []}
    server_busy: dict[int, list[float]] = {1: [], 2: []}
    machine: dict[int, list[float]] = {1: [], 2: []}
    rate_ratios, cpu_ratios = [], []
    with static_server(workdir) as static:
        url, kind = static.url, static.kind
        pid = static.process.pid  # nginx's master (its worker is a child), or sse_server.py
        for _ in range(args.runs):
            measured = {}
            for workers in (1, 2):
                name = f"workers{workers}"
                config = llamabatch_config(
                    workdir,
                    name,
                    base_url=url,
                    prompts=prompts,
                    concurrency=c,
                    max_tokens=64,
                    extra_engine=f"workers = {workers}",
                )
                before, machine_before = (_server_cpu_s(pid) if pid else 0.0), _machine()
                run = run_sampled(config, workdir / name)
                served = (_server_cpu_s(pid) - before) if pid else float("nan")
                busy, idle = (b - a for a, b in zip(machine_before, _machine(), strict=True))
                machine[workers].append(busy / (busy + idle) * 100)
                measured[workers] = run
                rates[workers].append(n / run.active_s)
                steady[workers].append(run.steady_ms)
                total[workers].append(run.cpu_s / n * 1e3)
                server_busy[workers].append(served / run.active_s * 100)
            rate_ratios.append(measured[1].active_s / measured[2].active_s)
            cpu_ratios.append(measured[2].steady_ms / measured[1].steady_ms)
    rows = [
        f"Server: {kind} on core 0; `llamabatch run` not pinned (workers use any core); "
        f"{n:,} streamed 64-token requests at concurrency {c}. Responses/s from the first "
        "request's start to the last response's end; CPU of every process of the run (parent "
        "and workers) sampled from /proc: steady = while the middle 80 % of rows finished, "
        "total = launch to exit (each worker is a Python interpreter: ~1 s of imports); "
        "server = the server's CPU over the run's active time, % of one core; machine = "
        "both cores' busy time over the whole run, every process on the VM (/proc/stat).",
        "",
        "| workers | responses/s (min / median / max) | CPU ms per response, steady "
        "| total, start-up included | server core busy % | machine busy % |",
        "|---|---|---|---|---|---|",
    ]
    for workers in (1, 2):
        rows.append(
            f"| {workers} | {spread(rates[workers], '{:,.0f}')} "
            f"| {spread(steady[workers], '{:.3f}')} | {spread(total[workers], '{:.3f}')} "
            f"| {spread(server_busy[workers], '{:.1f}')} "
            f"| {spread(machine[workers], '{:.0f}')} |"
        )
    load = os.getloadavg()[0]
    rows += [
        "",
        f"**responses/s, workers = 2 / workers = 1, side by side: {spread(rate_ratios)}** "
        "(target >= 1.7 where the machine has a core to spare); "
        f"**steady CPU per response, 2 / 1: {spread(cpu_ratios)}** (target <= 1.10). "
        f"Load average at the end: {load:.1f} on {os.cpu_count()} cores (shared VM).",
    ]
    return rows


def _machine() -> tuple[int, int]:
    """Busy and idle jiffies of all cores since boot (/proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal, idle + iowait


def _server_cpu_s(pid: int) -> float:
    """CPU of a server process and its children (nginx's worker runs under its master)."""
    total = 0.0
    for each in _descendants(pid):
        try:
            total += _proc_cpu_s(each)
        except (OSError, IndexError):
            continue
    return total


def shared_limits_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    """A server RPM limit met by two worker processes sharing one coordinator."""
    limit, window, n = args.rate_limit, args.rate_window_s, args.rate_requests
    prompts = write_prompts(workdir / "shared-rate.jsonl", n)
    argv = [PY, "-m", "llamabatch.cli", "sim", "--port", "0", "--rpm-limit", str(limit)]
    argv += ["--rpm-window-s", str(window), "--ttft-s", "0.01", "--tokens-per-s", "0"]
    argv += ["--output-tokens", "16", "--jitter", "0"]
    results: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for label, flags in _limit_modes(args):
        fractions, steady, rejected = [], [], []
        for _ in range(args.runs):
            with server(argv, ready="serving") as served:
                config = llamabatch_config(
                    workdir,
                    "shared-rate",
                    base_url=served.url,
                    prompts=prompts,
                    concurrency=32,
                    max_tokens=16,
                )
                run_tree(config, workdir / "shared-rate", None, *flags)
            fraction, after_first, share_429 = _rate_outcome(
                workdir / "shared-rate", n, limit, window
            )
            fractions.append(fraction)
            steady.append(after_first)
            rejected.append(share_429)
        results[label] = (fractions, steady, rejected)
    rows = [
        f"Simulator limit: {limit} requests per sliding {window:g} s window "
        f"({limit / window * 60:,.0f} RPM), advertised in x-ratelimit-* headers; {n:,} requests, "
        "concurrency 32 split between the processes, no client-side `rpm`. Achieved = ideal "
        "time ((requests - one window's worth) / the limit's rate) / time from the first "
        "request's start to the last one's end, so the time the client takes to send the "
        "first window's worth (start-up; the limit does not bind yet) counts against it; "
        "after the first window = the same ideal time / time from the start of the window's "
        "last request to the start of the run's last one (the limit binds throughout). 429s "
        "counted from the rows' attempts.",
        "",
        "| client | achieved % of the limit (min / median / max) | after the first window "
        "| % of requests answered 429 |",
        "|---|---|---|---|",
    ]
    for label, (fractions, steady, rejected) in results.items():
        rows.append(
            f"| {label} | **{spread(fractions, '{:.1f}')}** (target >= 95) "
            f"| {spread(steady, '{:.1f}')} "
            f"| **{spread(rejected, '{:.2f}')}** (target <= 2) |"
        )
    load = os.getloadavg()[0]
    rows += ["", f"Load average at the end: {load:.1f} on {os.cpu_count()} cores (shared VM)."]
    return rows


def _limit_modes(args: argparse.Namespace) -> Sequence[tuple[str, list[str]]]:
    modes = [("`llamabatch run --workers 2`", ["--workers", "2"])]
    if importlib.util.find_spec("ray") is not None:
        modes.append(
            ("`llamabatch run --ray`, 2 actors (local cluster)", ["--workers", "2", "--ray"])
        )
    return modes


def _rate_outcome(output: Path, n: int, limit: int, window: float) -> tuple[float, float, float]:
    """% of the limit achieved: whole run, and after the first window's worth; % of 429s."""
    import pyarrow.parquet as pq

    table = pq.read_table(output, columns=["attempts", "started_at", "finished_at"])
    attempts = sum(table["attempts"].to_pylist())
    starts = sorted(table["started_at"].to_pylist())
    elapsed = (max(table["finished_at"].to_pylist()) - starts[0]).total_seconds()
    after_first = (starts[-1] - starts[limit - 1]).total_seconds()
    ideal_s = (n - limit) / (limit / window)  # the first window's worth goes at once
    whole, steady = ideal_s / elapsed * 100, ideal_s / after_first * 100
    return whole, steady, (attempts - n) / attempts * 100


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _tree_cpu_s(pids: dict[int, float], root: int) -> float:
    """Update each live descendant's CPU (own and reaped children's); return the sum seen."""
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        pids[pid] = max(pids.get(pid, 0.0), ticks / os.sysconf("SC_CLK_TCK"))
    return sum(pids.values())


@dataclass
class Sampled:
    cpu_s: float  # the whole tree, start-up included
    steady_ms: float  # CPU ms per response while the middle 80 % of rows finished
    startup_s: float  # launch to the first request's start
    active_s: float


def run_sampled(config: Path, output: Path, *flags: str) -> Sampled:
    """`llamabatch run` with the CPU of every process it starts sampled (Ray's daemons and
    actors are not waited for by the driver, so wait4 alone would miss them).

    Steady-state CPU per response is taken between the times the 10th and the 90th
    percentile rows finished, so no process's start-up (an actor that starts after
    another has begun sending) counts in it.
    """
    import pyarrow.parquet as pq

    argv = [PY, "-m", "llamabatch.cli", "run", str(config), "-q", "--no-check", *flags]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    samples: list[tuple[float, float]] = []
    seen: dict[int, float] = {}
    with tempfile.TemporaryFile("w+") as err:
        launched = time.time()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while process.poll() is None:
            samples.append((time.time(), _tree_cpu_s(seen, process.pid)))
            time.sleep(0.1)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"llamabatch run failed: {err.read()[-2000:]}")
    table = pq.read_table(output, columns=["started_at", "finished_at"])
    first = min(table["started_at"].to_pylist()).timestamp()
    finished = sorted(t.timestamp() for t in table["finished_at"].to_pylist())
    low, high = finished[len(finished) // 10], finished[len(finished) * 9 // 10]
    rows = len(finished) * 9 // 10 - len(finished) // 10

    def cpu_at(moment: float) -> float:
        return max((cpu for t, cpu in samples if t <= moment), default=0.0)

    steady = (cpu_at(high) - cpu_at(low)) / rows * 1e3 if rows else float("nan")
    final = max(sum(seen.values()), samples[-1][1] if samples else 0.0)
    return Sampled(final, steady, first - launched, finished[-1] - first)


def ray_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Client CPU per response: 2 Ray actors on a local cluster against workers = 1."""
    if importlib.util.find_spec("ray") is None:
        return ["Not measured: Ray is not installed (`pip install -e '.[ray]'`)."]
    n = 2_000 if args.quick else 20_000
    prompts = write_prompts(workdir / "ray.jsonl", n)
    argv = [PY, "-m", "llamabatch.cli", "sim", "--port", "0", "--ttft-s", "0.005"]
    argv += ["--tokens-per-s", "0", "--output-tokens", "16", "--jitter", "0"]
    cpu: dict[str, list[float]] = {"one": [], "ray": []}
    total: dict[str, list[float]] = {"one": [], "ray": []}
    startup: dict[str, list[float]] = {"one": [], "ray": []}
    rates: dict[str, list[float]] = {"one": [], "ray": []}
    ratios = []
    with server(argv, ready="serving") as served:
        for _ in range(args.runs):
            measured = {}
            for key, workers, flags in (("one", 1, []), ("ray", 2, ["--ray"])):
                config = llamabatch_config(
                    workdir,
                    f"ray-{key}",
                    base_url=served.url,
                    prompts=prompts,
                    concurrency=64,
                    max_tokens=16,
                    extra_engine=f"workers = {workers}",
                )
                run = run_sampled(config, workdir / f"ray-{key}", *flags)
                measured[key] = run
                cpu[key].append(run.steady_ms)
                total[key].append(run.cpu_s / n * 1e3)
                startup[key].append(run.startup_s)
                rates[key].append(n / run.active_s)
            ratios.append(measured["ray"].steady_ms / measured["one"].steady_ms)
    rows = [
        f"Simulator (`llamabatch sim`, 5 ms TTFT, 16 tokens at once) on core 0; {n:,} "
        "requests at concurrency 64. CPU = every process the run starts (for Ray: the "
        "driver, the local cluster's daemons, the limiter and 2 share actors), sampled from "
        "/proc every 0.1 s. Steady = while the middle 80 % of rows finished (no start-up in "
        "it); total = everything from launch to exit over all rows; start-up = launch to the "
        "first request.",
        "",
        "| client | CPU ms per response, steady (min / median / max) | total, start-up "
        "included | responses/s | start-up s |",
        "|---|---|---|---|---|",
    ]
    labels = {"one": "`llamabatch run` (workers = 1)", "ray": "`llamabatch run --ray`, 2 actors"}
    for key, label in labels.items():
        rows.append(
            f"| {label} | {spread(cpu[key], '{:.3f}')} | {spread(total[key], '{:.3f}')} "
            f"| {spread(rates[key], '{:,.0f}')} "
            f"| {spread(startup[key], '{:.1f}')} |"
        )
    rows += ["", f"**Ray / one process, CPU per response: {spread(ratios)}** (target <= 1.5)."]
    return rows
