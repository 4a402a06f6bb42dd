"""Side-by-side benchmarks of llamabatch against reference clients; writes benchmarks/RESULTS.md.

    python benchmarks/run.py            # the full set (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick    # a smoke run of every section (CI runs this)

Servers run on core 0 and clients on core 1 (`taskset`) when the machine has
two cores or more. CPU is the client process's user + sys time (`wait4`),
start-up included. Every section is repeated `--runs` times and reported as
min / median / max; ratios are taken run by run, side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
PY = sys.executable
TTFT_S, GAP_S, TTFT_TOKENS = 0.1, 0.02, 16
PER_WRITE_STEP_S = 0.002  # a decode step: each stream's next event, written on its own
LLAMABATCH = "**llamabatch run** (whole process)"


@dataclass
class Measured:
    cpu_s: float
    wall_s: float
    max_rss_mb: float
    stdout: str


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def measure(
    argv: Sequence[str], *, env: dict[str, str] | None = None, stop_after_s: float | None = None
) -> Measured:
    """Run a client on core 1; its CPU time and peak RSS come from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen([*pinned(1), *argv], stdout=out, stderr=err, env=env)
        if stop_after_s is not None:
            deadline = started + stop_after_s
            while (
                time.perf_counter() < deadline
                and os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
            ):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode not in (0, 130):
            raise RuntimeError(f"{argv[:4]} failed ({process.returncode}): {err.read()[-2000:]}")
        return Measured(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, out.read())


@dataclass
class Served:
    """A benchmark server on a port the kernel chose: its base URL and its process."""

    url: str
    process: subprocess.Popen[str]
    kind: str = ""


@contextlib.contextmanager
def server(
    argv: Sequence[str], ready: str = "ready", listening: socket.socket | None = None
) -> Iterator[Served]:
    """A server on core 0, stopped (SIGTERM) on exit, on a port no other run can hold.

    It binds port 0 and names the port in its `ready` line; or (nginx, which cannot say)
    it is handed `listening`, a socket bound to port 0 here, through nginx's NGINX variable.
    """
    fds = () if listening is None else (listening.fileno(),)
    env = None if listening is None else {**os.environ, "NGINX": f"{fds[0]};"}
    process = subprocess.Popen(
        [*pinned(0), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        pass_fds=fds,
        env=env,
    )
    try:
        if listening is not None:
            served = Served(f"http://127.0.0.1:{listening.getsockname()[1]}/v1", process)
            _wait_for_http(served.url)
        else:
            served = Served(f"http://127.0.0.1:{_ready_port(process, ready)}/v1", process)
        yield served
    finally:
        process.terminate()
        process.wait(10)


def _ready_port(process: subprocess.Popen[str], ready: str) -> int:
    """The port in the server's `ready` line ("ready 8080", "serving http://127.0.0.1:8080")."""
    assert process.stdout is not None
    for line in process.stdout:
        if ready in line:
            found = re.search(r"(?:ready |127\.0\.0\.1:)(\d+)", line)
            if found is None:
                raise RuntimeError(f"no port in {line!r}")
            return int(found.group(1))
    raise RuntimeError(f"{process.args!r} exited before it was {ready}")


@contextlib.contextmanager
def static_server(workdir: Path) -> Iterator[Served]:
    """nginx serving the fixed 64-token stream in one write when installed, else sse_server.py."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        with server([PY, str(HERE / "sse_server.py"), "0"]) as served:
            served.kind = "sse_server.py (asyncio, one write)"
            yield served
        return
    sys.path.insert(0, str(HERE))
    from sse_server import events

    opening, body, closing = events(64)
    (workdir / "stream.txt").write_bytes(opening + b"".join(body) + closing)
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as listening:
        conf = workdir / "nginx.conf"
        conf.write_text(_nginx_conf(workdir, listening.getsockname()[1]))
        with server([nginx, "-c", str(conf), "-p", str(workdir)], listening=listening) as served:
            served.kind = f"nginx {_nginx_version(nginx)} (static file, one write)"
            yield served


def _nginx_conf(workdir: Path, port: int) -> str:
    return f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 1000000; client_body_temp_path {workdir};
  server {{
    listen 127.0.0.1:{port};
    location /v1/chat/completions {{
      default_type text/event-stream;
      error_page 405 =200 $uri;
      alias {workdir}/stream.txt;
    }}
  }}
}}
"""


def _nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    return out.strip().rsplit("/", 1)[-1]


def _wait_for_http(url: str) -> None:
    """Return once the server answers (its socket listened before it ran: connecting says
    nothing)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/chat/completions", data=b"{}", timeout=60) as answer:
        answer.read()


def write_prompts(path: Path, n: int) -> Path:
    with path.open("wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) + b"\n")
    return path


def llamabatch_config(
    workdir: Path,
    name: str,
    *,
    base_url: str,
    prompts: Path,
    concurrency: int,
    max_tokens: int,
    models: int = 1,
    extra_engine: str = "",
    extra_run: str = "",
) -> Path:
    model = '[[models]]\nname = "m{}"\nprovider = "openai"\nmodel = "bench"\nbase_url = "{}"\n'
    blocks = "".join(model.format(i, base_url) for i in range(models))
    path = workdir / f"{name}.toml"
    path.write_text(
        f'[run]\nname = "{name}"\ninput = "{prompts}"\noutput = "{workdir / name}"\n{extra_run}\n'
        f"[engine]\nconcurrency = {concurrency}\n{extra_engine}\n"
        f"[defaults]\nmax_tokens = {max_tokens}\n{blocks}"
    )
    shutil.rmtree(workdir / name, ignore_errors=True)
    return path


def run_llamabatch(config: Path, *flags: str, **kw: float) -> Measured:
    argv = [PY, "-m", "llamabatch.cli", "run", str(config), "-q", *flags]
    return measure(argv, **kw)  # type: ignore[arg-type]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """min / median / max of repeated measurements."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def cpu_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    n, sdk_n, c = args.requests, args.sdk_requests, 64
    prompts = write_prompts(workdir / "cpu.jsonl", n)
    per_request: dict[str, list[float]] = {"lean": [], "llamabatch": [], "sdk": []}
    ratios = []
    with static_server(workdir) as served:
        url, kind = served.url, served.kind
        lean_argv = [PY, str(HERE / "lean_client.py"), f"{url}/chat/completions", str(n), str(c)]
        for _ in range(args.runs):
            # The lean loop runs just before and just after llamabatch; the ratio
            # uses their mean, so the VM's drift between runs cancels out.
            before = measure(lean_argv)
            config = llamabatch_config(
                workdir, "cpu", base_url=url, prompts=prompts, concurrency=c, max_tokens=64
            )
            ours = run_llamabatch(config)
            after = measure(lean_argv)
            sdk = measure([PY, str(HERE / "sdk_client.py"), url, str(sdk_n), str(c)])
            lean_s = (before.cpu_s + after.cpu_s) / 2
            per_request["lean"].append(lean_s / n * 1e3)
            per_request["llamabatch"].append(ours.cpu_s / n * 1e3)
            per_request["sdk"].append(sdk.cpu_s / sdk_n * 1e3)
            ratios.append(ours.cpu_s / lean_s)
    rows = [
        f"Server: {kind} on core 0; clients on core 1; {n:,} streamed 64-token requests at "
        f"concurrency {c} ({sdk_n:,} for the SDK loop). CPU = client user+sys, start-up included; "
        "the lean loop runs before and after llamabatch in each run (their mean is used).",
        "",
        "| client | CPU ms per request (min / median / max) | requests/s on one core (median) |",
        "|---|---|---|",
    ]
    names = {
        "lean": "lean aiohttp + orjson loop",
        "llamabatch": LLAMABATCH,
        "sdk": "openai SDK + semaphore",
    }
    for key, label in names.items():
        values = per_request[key]
        rows.append(
            f"| {label} | {spread(values, '{:.3f}')} | {1e3 / statistics.median(values):,.0f} |"
        )
    rows += [
        "",
        f"**llamabatch / lean CPU ratio, side by side: {spread(ratios)}** (target <= 1.2).",
    ]
    return rows


def per_write_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    """CPU per response when the server writes every SSE event separately, as real servers do."""
    n, c, step = args.per_write_requests, 64, PER_WRITE_STEP_S
    prompts = write_prompts(workdir / "per-write.jsonl", n)
    per_request: dict[str, list[float]] = {"lean": [], "llamabatch": []}
    ratios = []
    argv = [PY, str(HERE / "sse_server.py"), "0", "--tokens", "64", "--step-s", str(step)]
    with server(argv) as served:
        url = served.url
        lean_argv = [PY, str(HERE / "lean_client.py"), f"{url}/chat/completions", str(n), str(c)]
        for _ in range(args.runs):
            before = measure(lean_argv)
            config = llamabatch_config(
                workdir, "per-write", base_url=url, prompts=prompts, concurrency=c, max_tokens=64
            )
            ours = run_llamabatch(config)
            after = measure(lean_argv)
            lean_s = (before.cpu_s + after.cpu_s) / 2
            per_request["lean"].append(lean_s / n * 1e3)
            per_request["llamabatch"].append(ours.cpu_s / n * 1e3)
            ratios.append(ours.cpu_s / lean_s)
    rows = [
        f"Server: `sse_server.py --step-s {step:g}` (asyncio + uvloop) on core 0: every "
        f"{step * 1e3:g} ms each open stream gets its next SSE event in a write of its own "
        "(68 writes per response: role, 64 tokens, finish, usage, [DONE]), as vLLM, llama.cpp, "
        f"TGI and Ollama write one event per token. Clients on core 1; {n:,} requests at "
        f"concurrency {c}; CPU = client user+sys, start-up included; the lean loop runs before "
        "and after llamabatch in each run (their mean is used).",
        "",
        "| client | CPU ms per response (min / median / max) | µs per event (median) |",
        "|---|---|---|",
    ]
    names = {"lean": "lean aiohttp + orjson loop (wakes per read)", "llamabatch": LLAMABATCH}
    for key, label in names.items():
        values = per_request[key]
        median = statistics.median(values)
        rows.append(f"| {label} | {spread(values, '{:.3f}')} | {median / 68 * 1e3:.1f} |")
    rows += [
        "",
        f"**llamabatch / lean CPU ratio, side by side: {spread(ratios)}** (target <= 0.6).",
    ]
    return rows


def ttft_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    rows = [
        f"Server: `sse_server.py` (asyncio + uvloop) on core 0 sending the first token exactly "
        f"{TTFT_S * 1e3:.0f} ms after the request and {TTFT_TOKENS} chunks "
        f"{GAP_S * 1e3:.0f} ms apart; "
        f"error = measured TTFT - {TTFT_S * 1e3:.0f} ms, over {args.waves} waves of requests. "
        "Server lateness is the server's own delay past each due time (p50 / p99). "
        "llamabatch times a chunk by the kernel's receive stamp (Linux); the reference "
        "loops by when their code sees it. The error also holds the server's own delays "
        "(reading a request late, or accepting its connection late, on a busy core 0); "
        "the last column leaves them out: the server writes its head when the request "
        "arrives and each chunk's real send time in the chunk (`--stamp`), so "
        "(ttft_s - ttfb_s) - the first chunk's send time is the client's own error.",
        "",
        "| concurrency | client | TTFT error p50 ms | TTFT error p99 ms | server lateness ms "
        "| client's own error p50 / p99 ms (from the head) |",
        "|---|---|---|---|---|---|",
    ]
    for c in args.ttft_concurrency:
        n = c * args.waves
        prompts = write_prompts(workdir / f"ttft{c}.jsonl", n)
        clients = ["lean", "llamabatch"] + (["sdk"] if c <= args.sdk_max_concurrency else [])
        for client in clients:
            p50s, p99s, late, own50, own99 = [], [], [], [], []
            for _ in range(args.runs):
                errors, lateness, own = ttft_once(client, c, n, prompts, workdir)
                p50s.append(percentile(errors, 0.5) * 1e3)
                p99s.append(percentile(errors, 0.99) * 1e3)
                late.append(f"{lateness['p50_s'] * 1e3:.1f} / {lateness['p99_s'] * 1e3:.1f}")
                own50.append(percentile(own, 0.5) * 1e3)
                own99.append(percentile(own, 0.99) * 1e3)
            label = "**llamabatch**" if client == "llamabatch" else client
            cells = [str(c), label, spread(p50s, "{:.1f}"), spread(p99s, "{:.1f}")]
            mine = "—"
            if client == "llamabatch":
                mine = f"{spread(own50, '{:.1f}')}; p99 {spread(own99, '{:.1f}')}"
            rows.append("| " + " | ".join([*cells, late[len(late) // 2], mine]) + " |")
    return rows


def ttft_once(
    client: str, c: int, n: int, prompts: Path, workdir: Path
) -> tuple[list[float], dict[str, float], list[float]]:
    """TTFT errors (measured - TTFT_S), the server's lateness, and (llamabatch) the
    client's own errors: (ttft_s - ttfb_s) - when the server really sent the first chunk."""
    stats = workdir / "server-stats.json"
    argv = [
        PY,
        str(HERE / "sse_server.py"),
        "0",
        "--tokens",
        str(TTFT_TOKENS),
        "--ttft-s",
        str(TTFT_S),
        "--gap-s",
        str(GAP_S),
        "--stats",
        str(stats),
        "--stamp",
    ]
    own: list[float] = []
    with server(argv) as served:
        url = served.url
        if client == "llamabatch":
            config = llamabatch_config(
                workdir,
                f"ttft{c}",
                base_url=url,
                prompts=prompts,
                concurrency=c,
                max_tokens=TTFT_TOKENS,
            )
            run_llamabatch(config)
            import pyarrow.parquet as pq

            columns = ["ttft_s", "ttfb_s", "output_text"]
            table = pq.read_table(workdir / f"ttft{c}", columns=columns).to_pylist()
            ttfts = [row["ttft_s"] for row in table]
            own = [
                row["ttft_s"] - row["ttfb_s"] - int(row["output_text"].split()[0][1:]) * 1e-6
                for row in table
                if row["ttft_s"] is not None and row["ttfb_s"] is not None
            ]
        else:
            script = "lean_client.py" if client == "lean" else "sdk_client.py"
            target = f"{url}/chat/completions" if client == "lean" else url
            out = measure([PY, str(HERE / script), target, str(n), str(c), str(TTFT_TOKENS)])
            ttfts = json.loads(out.stdout)["ttft_s"]
    lateness = json.loads(stats.read_text())
    return [t - TTFT_S for t in ttfts if t is not None], lateness, own


def memory_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    n = args.memory_prompts
    prompts = write_prompts(workdir / "memory.jsonl", n)
    rows = [
        "| measurement | peak RSS MB | wall s | notes |",
        "|---|---|---|---|",
    ]
    with static_server(workdir) as served:
        config = llamabatch_config(
            workdir,
            "memory",
            base_url=served.url,
            prompts=prompts,
            concurrency=64,
            max_tokens=64,
            models=3,
        )
        run = run_llamabatch(config, stop_after_s=args.memory_seconds)
    done = _count_rows(workdir / "memory")
    rows.append(
        f"| run: {n:,} prompts x 3 models, interrupted after {args.memory_seconds:g} s "
        f"| **{run.max_rss_mb:.0f}** | {run.wall_s:.1f} "
        f"| {done:,} rows written (target <= 300 MB) |"
    )
    finished = workdir / "resume"
    # Written in a child process: Linux counts a parent's RSS at fork time in a
    # child's peak RSS, so this process must stay small for the figures below.
    writer = multiprocessing.get_context("spawn").Process(
        target=_write_finished_rows, args=(prompts, finished), kwargs={"model": "m0"}
    )
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        raise RuntimeError(f"writing finished rows failed ({writer.exitcode})")
    config = llamabatch_config(
        workdir,
        "resume-run",
        base_url="http://127.0.0.1:9/v1",
        prompts=prompts,
        concurrency=64,
        max_tokens=64,
    )
    text = config.read_text().replace(
        f'output = "{workdir / "resume-run"}"', f'output = "{finished}"'
    )
    config.write_text(text)
    # Nothing is left to send, so nothing listens at base_url: skip the endpoint preflight.
    first = run_llamabatch(config, "--no-check")  # no validation record yet: a full pass
    rows.append(
        f"| first resume over {n:,} finished rows written elsewhere (validates all prompts) "
        f"| {first.max_rss_mb:.0f} | {first.wall_s:.1f} | keeps a validation record in _scan/ |"
    )
    resume = run_llamabatch(config, "--no-check")
    rows.append(
        f"| resume start-up over {n:,} finished rows (nothing left to send) "
        f"| {resume.max_rss_mb:.0f} "
        f"| **{resume.wall_s:.1f}** | whole process: unchanged file recognised by digest, "
        "repair, index, mark rows (target <= 10 s) |"
    )
    return rows


def _count_rows(output: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in output.glob("part-*.parquet"))


def _write_finished_rows(prompts: Path, output: Path, *, model: str) -> None:
    """An output directory holding an ok row for every prompt, as a finished run leaves it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llamabatch.prompts.promptset import PromptSet
    from llamabatch.results import result_schema

    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    schema = result_schema()
    template = dict.fromkeys(schema.names)
    template.update(
        run_id="bench",
        model=model,
        provider="openai",
        model_id="bench",
        sample=0,
        status="ok",
        attempts=1,
        usage_source="server",
        queue_s=0.0,
        latency_s=0.1,
        started_at=0,
        finished_at=0,
        request_params='{"max_tokens":64}',
        output_text="x",
        completion_tokens=64,
    )
    batch: list[dict[str, object]] = []
    part = 0
    for prompt in PromptSet(prompts):
        batch.append({**template, "prompt_id": prompt.id, "prompt_hash": prompt.content_hash})
        if len(batch) == 100_000:
            pq.write_table(
                pa.Table.from_pylist(batch, schema), output / f"part-bench-{part:06d}.parquet"
            )
            batch, part = [], part + 1
    if batch:
        pq.write_table(
            pa.Table.from_pylist(batch, schema), output / f"part-bench-{part:06d}.parquet"
        )


def ratelimit_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    limit, window, n = args.rate_limit, args.rate_window_s, args.rate_requests
    prompts = write_prompts(workdir / "rate.jsonl", n)
    argv = [
        PY,
        "-m",
        "llamabatch.cli",
        "sim",
        "--port",
        "0",
        "--rpm-limit",
        str(limit),
        "--rpm-window-s",
        str(window),
        "--ttft-s",
        "0.01",
        "--tokens-per-s",
        "0",
        "--output-tokens",
        "16",
        "--jitter",
        "0",
    ]
    fractions, rejected = [], []
    for _ in range(args.runs):
        # A fresh server per run: the window must not hold the previous run's requests.
        with server(argv, ready="serving") as served:
            config = llamabatch_config(
                workdir,
                "rate",
                base_url=served.url,
                prompts=prompts,
                concurrency=32,
                max_tokens=16,
            )
            run = run_llamabatch(config)
            import pyarrow.parquet as pq

            table = pq.read_table(
                workdir / "rate", columns=["attempts", "started_at", "finished_at"]
            )
            attempts = sum(table["attempts"].to_pylist())
            started = min(table["started_at"].to_pylist())
            elapsed = (max(table["finished_at"].to_pylist()) - started).total_seconds()
            ideal_s = (n - limit) / (limit / window)  # the first window's worth goes at once
            fractions.append(ideal_s / elapsed * 100)
            del run
            rejected.append((attempts - n) / attempts * 100)
    return [
        f"Simulator limit: {limit} requests per sliding {window:g} s window "
        f"({limit / window * 60:,.0f} RPM), advertised in x-ratelimit-* headers; {n:,} requests, "
        "concurrency 32, no client-side `rpm` configured. Achieved = ideal time / time from "
        "the first request's start to the last one's end.",
        "",
        "| achieved % of the limit (min / median / max) | % of requests answered 429 |",
        "|---|---|",
        f"| **{spread(fractions, '{:.1f}')}** (target >= 95) "
        f"| **{spread(rejected, '{:.2f}')}** (target <= 2) |",
    ]


def chunk_times_section(args: argparse.Namespace, workdir: Path) -> list[str]:
    """What `[run] chunk_times = true` costs; how close its offsets are to when chunks were sent."""
    n, c = args.requests, 64
    prompts = write_prompts(workdir / "chunks.jsonl", n)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    with static_server(workdir) as served:
        kind = served.kind
        for _ in range(args.runs):
            for on in (False, True):
                config = llamabatch_config(
                    workdir,
                    f"chunks-{on}",
                    base_url=served.url,
                    prompts=prompts,
                    concurrency=c,
                    max_tokens=64,
                    extra_run=f"chunk_times = {str(on).lower()}",
                )
                cpu[on].append(run_llamabatch(config).cpu_s / n * 1e3)
            ratios.append(cpu[True][-1] / cpu[False][-1])
    stamped = stamped_offsets(args, workdir)
    sim = sim_offsets(args, workdir)
    parquet, journal = _chunk_column_bytes(workdir / "stamped")
    return [
        f"Server: {kind}; {n:,} streamed 64-token requests at concurrency {c}, "
        "llamabatch run with `chunk_times` off and on, alternately (CPU = whole process).",
        "",
        "| chunk_times | CPU ms per request (min / median / max) |",
        "|---|---|",
        f"| off | {spread(cpu[False], '{:.3f}')} |",
        f"| on | {spread(cpu[True], '{:.3f}')} |",
        "",
        f"**on / off CPU ratio, side by side: {spread(ratios)}**. Size, for {TTFT_TOKENS} "
        f"chunks {GAP_S * 1e3:.0f} ms apart: the two chunk columns add {parquet:.0f} bytes per "
        f"row to the Parquet part (zstd) and {journal:.0f} bytes to its journal line.",
        "",
        f"Accuracy at concurrency 32 ({args.waves} waves), servers in their own process on "
        f"core 0: first token {TTFT_S * 1e3:.0f} ms after the request, then one every "
        f"{GAP_S * 1e3:.0f} ms. Error = stored offset - the server's.",
        "",
        "| server, compared with | chunks | abs. error p50 ms | p99 ms | max ms | within 2 ms |",
        "|---|---|---|---|---|---|",
        _error_row(
            "`sse_server.py --stamp`: each chunk's real send time (written in the chunk), "
            "both counted from the response head",
            stamped[0],
        ),
        _error_row(
            "the same, counted from the request's start: adds the time the server took to "
            "read the request",
            stamped[1],
        ),
        _error_row(
            "`llamabatch sim --jitter 0` (exact-timing profile): its schedule, from its "
            "response head (`ttfb_s`); includes the simulator's own lateness",
            sim,
        ),
    ]


def _error_row(label: str, errors: list[float]) -> str:
    ms = [abs(e) * 1e3 for e in errors]
    within = sum(m <= 2.0 for m in ms) / len(ms) * 100 if ms else float("nan")
    return (
        f"| {label} | {len(ms):,} | {percentile(ms, 0.5):.2f} | {percentile(ms, 0.99):.2f} "
        f"| {max(ms, default=0.0):.2f} | **{within:.1f} %** |"
    )


def _chunk_column_bytes(output: Path) -> tuple[float, float]:
    """Bytes per row of the chunk columns: in a zstd Parquet part, and as journalled JSON."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(output, columns=["chunk_times_s", "chunk_tokens"])
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    empty = len(orjson.dumps({"chunk_times_s": None, "chunk_tokens": None}))
    journal = [
        len(orjson.dumps({"chunk_times_s": [round(t, 6) for t in row], "chunk_tokens": None}))
        - empty
        for row in table["chunk_times_s"].to_pylist()
    ]
    return buffer.tell() / table.num_rows, statistics.mean(journal)


def _offsets_run(workdir: Path, name: str, url: str, tokens: int, c: int, n: int) -> Path:
    config = llamabatch_config(
        workdir,
        name,
        base_url=url,
        prompts=write_prompts(workdir / f"{name}.jsonl", n),
        concurrency=c,
        max_tokens=tokens,
        extra_run="chunk_times = true",
    )
    run_llamabatch(config)
    return workdir / name


def stamped_offsets(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    """Stored offsets minus each chunk's real send time: counted from the response head, and
    from the request's start (which adds however long the server took to read the request)."""
    import pyarrow.parquet as pq

    argv = [PY, str(HERE / "sse_server.py"), "0", "--tokens", str(TTFT_TOKENS), "--stamp"]
    argv += ["--ttft-s", str(TTFT_S), "--gap-s", str(GAP_S)]
    with server(argv) as served:
        url = served.url
        output = _offsets_run(workdir, "stamped", url, TTFT_TOKENS, 32, 32 * args.waves)
    columns = ["chunk_times_s", "output_text", "ttfb_s"]
    from_head, from_start = [], []
    for row in pq.read_table(output, columns=columns).to_pylist():
        # The server writes its head on arrival, then each chunk's send time in the chunk.
        sent = [int(word[1:]) * 1e-6 for word in row["output_text"].split()]
        times = row["chunk_times_s"]
        if len(times) != len(sent):
            continue  # chunks merged by a late reader cannot be matched one to one
        from_head += [t - row["ttfb_s"] - s for t, s in zip(times, sent, strict=True)]
        from_start += [t - s for t, s in zip(times, sent, strict=True)]
    return from_head, from_start


def sim_offsets(args: argparse.Namespace, workdir: Path) -> list[float]:
    """Stored offsets minus the simulator's exact schedule, counted from its response head."""
    import pyarrow.parquet as pq

    argv = [PY, "-m", "llamabatch.cli", "sim", "--port", "0", "--jitter", "0"]
    argv += ["--ttft-s", str(TTFT_S), "--tokens-per-s", str(1 / GAP_S)]
    argv += ["--output-tokens", str(TTFT_TOKENS)]
    with server(argv, ready="serving") as served:
        url = served.url
        output = _offsets_run(workdir, "sim-offsets", url, 4 * TTFT_TOKENS, 32, 32 * args.waves)
    rows = pq.read_table(output, columns=["chunk_times_s", "ttfb_s"]).to_pylist()
    return [
        t - (row["ttfb_s"] + TTFT_S + i * GAP_S)
        for row in rows
        for i, t in enumerate(row["chunk_times_s"] or [])
    ]


def machine() -> list[str]:
    import aiohttp

    import llamabatch

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"- CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, llamabatch {llamabatch.__version__}, "
        f"aiohttp {aiohttp.__version__}, orjson {orjson.__version__}",
        "- On a shared VM the same client's CPU time varies by up to ±25 % between runs: "
        "hence min / median / max, and ratios taken run by run, side by side.",
        "- llamabatch is byte-compiled before measuring, as an installed package is "
        "(`PYTHONDONTWRITEBYTECODE` would otherwise recompile it at every start).",
    ]


def this_run(load_before: float) -> str:
    """The header line naming this run: when, its command, and the load it started at."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join(["python benchmarks/run.py", *sys.argv[1:]])
    return f"- {when}: `{command}` (load average {load_before:.1f} at the start)"


def _scaling(name: str) -> Callable[[argparse.Namespace, Path], list[str]]:
    """A section of scaling.py (imported when run: it imports this module)."""

    def section(args: argparse.Namespace, workdir: Path) -> list[str]:
        import scaling

        result: list[str] = getattr(scaling, f"{name}_section")(args, workdir)
        return result

    return section


SECTIONS = {
    "cpu": ("CPU per streamed request", cpu_section),
    "per-write": ("CPU per streamed response, one write per event", per_write_section),
    "ttft": ("TTFT honesty under concurrency", ttft_section),
    "memory": ("Memory and resume start-up", memory_section),
    "ratelimit": ("Throughput under a server-side rate limit", ratelimit_section),
    "chunks": ("Raw chunk times: cost and accuracy", chunk_times_section),
    "workers": ("Worker processes: responses/s and CPU per response", _scaling("workers")),
    "shared-limits": ("A rate limit shared by processes", _scaling("shared_limits")),
    "ray": ("Ray: CPU per response and start-up", _scaling("ray")),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run of every section")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--runs", type=int, help="repetitions per measurement (default 3; quick 1)")
    parser.add_argument(
        "-o", "--output", type=Path, help="report file (default benchmarks/RESULTS.md)"
    )
    args = parser.parse_args()
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.requests, args.sdk_requests = (1_000, 200) if quick else (20_000, 2_000)
    args.per_write_requests = 1_000 if quick else 10_000
    args.ttft_concurrency = [32, 256] if quick else [32, 256, 1024]
    args.waves, args.sdk_max_concurrency = (2, 32) if quick else (4, 256)
    args.memory_prompts, args.memory_seconds = (20_000, 8.0) if quick else (1_000_000, 60.0)
    args.rate_limit, args.rate_window_s, args.rate_requests = (
        (60, 2.0, 150) if quick else (600, 10.0, 3_000)
    )
    output = args.output or (HERE / ("RESULTS-quick.md" if quick else "RESULTS.md"))
    load_before = os.getloadavg()[0]
    byte_compile()
    fresh: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="llamabatch-bench-") as tmp:
        for key in args.only or list(SECTIONS):
            title, section = SECTIONS[key]
            print(f"== {title}", flush=True)
            body = section(args, Path(tmp))
            print("\n".join(body), flush=True)
            fresh[title] = body
    header = [*machine(), this_run(load_before)]
    output.write_text(merge_results(output, header, fresh, partial=bool(args.only)))
    print(f"wrote {output}")


def byte_compile() -> None:
    """Byte-compile llamabatch as installing it does, so no run measured recompiles it.

    With PYTHONDONTWRITEBYTECODE set (as on this machine) an editable checkout is
    compiled from source at every start, ~0.1 s of CPU the clients it is compared with
    (their packages compiled when pip installed them) do not pay.
    """
    import compileall

    import llamabatch

    compileall.compile_dir(Path(llamabatch.__file__).parent, quiet=1)


def merge_results(
    output: Path, header: list[str], fresh: dict[str, list[str]], *, partial: bool
) -> str:
    """The report with `fresh` sections replacing their namesakes; every other section kept.

    Sections this script did not run this time (`--only`), and those other
    scripts measured (`view_rows.py`, `batch_mode.py`, ...), stay as they were,
    in their places; new sections go where SECTIONS puts them. A partial run
    keeps the header's notes on earlier runs (the sections it kept were measured
    by them): its machine lines are renewed and its own line added at the end.
    """
    text = output.read_text() if output.exists() else ""
    old = text.split("\n## ")
    kept = {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in old[1:]}
    if partial:
        notes = [
            line
            for line in old[0].splitlines()
            if line.startswith("- ")
            and line not in header
            and not line.startswith(("- CPU: ", "- Python "))
        ]
        header = [*header[:-1], *notes, header[-1]]
    titles = [title for title, _ in SECTIONS.values()]
    order = [t for t in titles if t in fresh or t in kept]
    order += [t for t in kept if t not in titles]
    blocks = ["# llamabatch benchmarks\n", *header, ""]
    for title in order:
        if title in fresh:
            blocks += [f"## {title}", "", *fresh[title], ""]
        else:
            blocks.append(f"## {title}\n{kept[title].rstrip()}\n")
    return "\n".join(blocks).rstrip() + "\n"


if __name__ == "__main__":
    main()
