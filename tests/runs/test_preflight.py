"""`llamabatch check`: reachability, keys, model lists and a one-token TTFT per model."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llamabatch import SimServer, config_from_dict
from llamabatch.cli.commands import main
from llamabatch.runs.preflight import check, format_results
from tests.helpers import FAST


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
    assert odd.ok and odd.listed == "no"  # the list is advice; the request decides
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
