"""Servers a run starts: a local server outlives its start-up timeout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import anyio
import pytest

from llamabatch.config import ModelConfig
from llamabatch.config.endpoints import ServerSpec
from llamabatch.runs import servers

pytestmark = pytest.mark.anyio
# A stand-in for llama-cpp-python's server: says it is ready, then serves until stopped.
READY = (
    "import sys, time; print('Uvicorn running on http://127.0.0.1:1', file=sys.stderr, "
    "flush=True); time.sleep(60)"
)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
async def test_the_startup_timeout_bounds_the_start_up_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        servers, "server_command", lambda *args, **kwargs: [sys.executable, "-c", READY]
    )
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    spec = ServerSpec(gguf=str(gguf), startup_timeout_s=0.5)
    model = ModelConfig(name="local", provider="openai", model="m", server=spec)
    async with servers.llama_cpp_server(model) as url:
        await anyio.sleep(1.0)  # a run longer than the start-up timeout: the server stays
    assert url == "http://127.0.0.1:1/v1"
