"""`llamabatch check`: reachability, keys, model lists and a one-token TTFT per model."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import ClientSession, web

from llamabatch import SimServer, UsageError, arun, config_from_dict
from llamabatch.cli.commands import main
from llamabatch.runs.preflight import check, format_results
from tests.helpers import FAST, prompt_rows, write_jsonl


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, *models: dict[str, object]) -> object:
    return config_from_dict({"run": {"input": str(tmp_path / "p.jsonl")}, "models": list(models)})


@pytest.mark.anyio
async def test_every_format_answers_with_one_cheap_request_each(tmp_path: Path) -> None:
    async with SimServer(default=FAST, api_key="sk-right-key") as sim:
        cfg = config(
            tmp_path,
            {
                "name": "a",
                "provider": "openai",
                "model": "scout",
                "base_url": sim.base_url,
                "api_key_env": "CHECK_KEY",
            },
            {
                "name": "b",
                "provider": "llama",
                "model": "maverick",
                "base_url": sim.llama_base_url,
                "api_key_env": "CHECK_KEY",
            },
            {
                "name": "c",
                "provider": "ollama",
                "model": "8b",
                "base_url": sim.root_url,
                "api_key_env": "CHECK_KEY",
            },
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CHECK_KEY", "sk-right-key")
            results = await check(cfg)  # type: ignore[arg-type]
        chat_requests = sim.stats.requests
    assert [r.model for r in results] == ["a", "b", "c"]
    assert all(r.ok and r.reachable == "yes" and r.key == "ok" for r in results)
    assert all(r.listed == "yes" for r in results)
    assert all(r.ttft_s is not None and r.ttft_s > 0 for r in results)
    assert chat_requests == 3  # one single-token request per model, nothing more


@pytest.mark.anyio
async def test_failures_are_told_apart(tmp_path: Path) -> None:
    key = "sk-wrong-0123456789"
    async with SimServer(default=FAST, api_key="sk-right-key") as sim:
        cfg = config(
            tmp_path,
            {"name": "badkey", "model": "scout", "base_url": sim.base_url, "api_key_env": "K"},
            {"name": "down", "model": "scout", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("K", key)
            badkey, down = await check(cfg)  # type: ignore[arg-type]
    assert (badkey.ok, badkey.reachable, badkey.key) == (False, "yes", "rejected")
    assert (down.ok, down.reachable) == (False, "no") and "connection" in (down.problem or "")
    table = format_results([badkey, down])
    assert "FAIL" in table and key not in table


@pytest.mark.anyio
async def test_unlisted_model_and_a_404_chat(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        cfg = config(
            tmp_path,
            {"name": "odd", "model": "not-in-the-list", "base_url": sim.base_url},
        )
        (odd,) = await check(cfg)  # type: ignore[arg-type]
        sim.script.append("404")
        (missing,) = await check(cfg)  # type: ignore[arg-type]
    # Not in the list, but /v1/models/{id} knows it (a server with a default serves any name).
    assert odd.ok and odd.listed == "yes"
    assert (
        not missing.ok and missing.problem is not None and missing.problem.startswith("not_found")
    )


def test_cli_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[run]\ninput = "p.jsonl"\n[[models]]\nname = "scout"\nprovider = "sim"\n'
        "sim = { ttft_s = 0.0, tokens_per_s = 0.0 }\n"
    )
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "scout" in out and "TTFT" in out and " ok" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[run]\ninput = "p.jsonl"\n[[models]]\nname = "x"\nmodel = "m"\n'
        f'base_url = "http://127.0.0.1:{free_port()}/v1"\n'
    )
    assert main(["check", str(bad), "--timeout-s", "5"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.toml")]) == 2


def run_config(tmp_path: Path, *models: dict[str, object]) -> Path:
    """A TOML config of `models` over two prompts."""
    write_jsonl(tmp_path / "p.jsonl", prompt_rows(2))
    lines = [f'[run]\ninput = "{tmp_path}/p.jsonl"\noutput = "{tmp_path}/out"']
    for model in models:
        lines.append("[[models]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in model.items()))
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.mark.anyio
async def test_run_refuses_what_every_row_would_fail_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K", "sk-wrong-0123456789")
    async with SimServer(profiles={"qwen2.5-7b-instruct": FAST, "gemma-3-4b": FAST}) as sim:
        path = run_config(
            tmp_path,
            {"name": "typo", "model": "qwen2.5-7b-instrct", "base_url": sim.base_url},
            {"name": "down", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            {"name": "ok", "model": "gemma-3-4b", "base_url": sim.base_url},
        )
        with pytest.raises(UsageError) as info:
            await arun(path)
        requests = sim.stats.requests
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"model 'typo': {sim.base_url} does not list model 'qwen2.5-7b-instrct'; "
        "did you mean 'qwen2.5-7b-instruct'?"
    )
    assert lines[1].startswith("model 'down': cannot reach http://127.0.0.1:")
    assert "connection refused" in lines[1] and "check base_url" in lines[1]
    assert len(lines) == 3 and "--no-check" in lines[2]
    assert requests == 0 and not (tmp_path / "out").exists()  # nothing sent, nothing written


@pytest.mark.anyio
async def test_a_rejected_key_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-wrong-0123456789"
    monkeypatch.setenv("K", key)
    async with SimServer(default=FAST, api_key="sk-right") as sim:
        path = run_config(
            tmp_path, {"name": "a", "model": "m", "base_url": sim.base_url, "api_key_env": "K"}
        )
        with pytest.raises(UsageError, match=r"^model 'a': key rejected: HTTP 401 .*api_key_env K"):
            await arun(path)
        assert sim.stats.requests == 0
        result = await arun(path, check=False)  # skipped: every row fails, as the check said
    assert result.errors == {"auth": 2} and key not in str(result.dataframe().to_dict())


@pytest.mark.anyio
async def test_a_single_model_server_is_sent_any_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """llama.cpp's server lists the one model it has and answers whatever name is asked."""
    async with SimServer(default=FAST) as sim:

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"object": "list", "data": [{"id": "gemma.gguf"}]})

        async def chat(request: web.Request) -> web.StreamResponse:
            async with (
                ClientSession() as session,
                session.post(f"{sim.base_url}/chat/completions", data=await request.read()) as r,
            ):
                return web.Response(body=await r.read(), content_type="text/event-stream")

        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        try:
            with caplog.at_level(logging.WARNING, logger="llamabatch"):
                result = await arun(
                    run_config(tmp_path, {"name": "g", "model": "local", "base_url": url})
                )
        finally:
            await runner.cleanup()
    assert result.exit_code == 0
    assert any("lists only 'gemma.gguf', not 'local'" in r.getMessage() for r in caplog.records)


def test_cli_run_against_a_dead_endpoint_ends_at_once_either_way(tmp_path: Path) -> None:
    path = run_config(
        tmp_path, {"name": "down", "model": "m", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    )
    command = [sys.executable, "-m", "llamabatch.cli", "run", str(path), "-q"]
    started = time.monotonic()
    checked = subprocess.run(command, capture_output=True, text=True, check=False)
    unchecked = subprocess.run(
        [*command, "--no-check"], capture_output=True, text=True, check=False
    )
    assert time.monotonic() - started < 15
    assert checked.returncode == 2
    assert checked.stderr.startswith("llamabatch: error: model 'down': cannot reach http://127.0")
    assert unchecked.returncode == 3
    assert "down: stopped: connection refused" in unchecked.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 2 and (df["error_type"] == "connection").all()
