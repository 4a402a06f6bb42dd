"""Issue #12, strict requests: each silent mistake is one line, exit 2, and no request sent.

Every case runs the real command line against a simulator on port 0 and
counts the chat requests it saw; `extra_body` is observed in the bodies a
recording HTTP server received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from llamabatch import arun
from llamabatch.cli.commands import main
from llamabatch.config import load_config
from llamabatch.errors import ConfigError
from llamabatch.sim.server import SimServer
from tests.helpers import FAST, write_jsonl

ROW = {"id": "p0", "prompt": "hi"}


def config(
    tmp_path: Path,
    base_url: str,
    prompts: Path,
    *,
    defaults: str = "",
    model: str = "",
    provider: str = "openai",
) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        f"[defaults]\n{defaults}\n"
        f"[[models]]\nname = 'm1'\nprovider = '{provider}'\nbase_url = '{base_url}'\n{model}\n"
    )
    return path


async def run(args: list[str]) -> int:
    return await anyio.to_thread.run_sync(main, [*args, "--no-check"])


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(default=FAST) as server:
        yield server


async def refused(
    sim: SimServer, capsys: pytest.CaptureFixture[str], path: Path, *extra: str
) -> str:
    """Run `path`; assert exit 2, one line on stderr, no chat request; return that line."""
    assert await run(["run", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert sim.stats.requests == 0
    return err


CONFIG_CASES = {
    "max_token": (
        {"defaults": "max_token = 32"},
        "defaults.max_token is not a request setting (did you mean max_tokens?)",
    ),
    "temprature": (
        {"defaults": "temprature = 0.2"},
        "defaults.temprature is not a request setting (did you mean temperature?)",
    ),
    "max_tokens string": (
        {"defaults": 'max_tokens = "32"'},
        "defaults.max_tokens must be an integer, got '32'",
    ),
    "model in defaults": ({"defaults": 'model = "gpt-4o"'}, "defaults.model is reserved"),
    "messages in defaults": ({"defaults": "messages = []"}, "defaults.messages is reserved"),
    "stream in defaults": ({"defaults": "stream = true"}, "defaults.stream is reserved"),
    "model in model params": (
        {"model": 'params = { model = "other" }'},
        "models[0].params.model is reserved: the model's `model` setting decides it",
    ),
    "messages in model params": (
        {"model": "params = { messages = [] }"},
        "models[0].params.messages is reserved",
    ),
    "stream in model params": (
        {"model": "params = { stream = false }"},
        "models[0].params.stream is reserved: set `stream` on the [[models]] entry",
    ),
    "n in model params": ({"model": "params = { n = 4 }"}, "use [run] repeats"),
    "hot and negative (#14)": (
        {"model": 'params = { temperature = "hot", max_tokens = -5 }'},
        "models[0].params.temperature must be a number, got 'hot'",
    ),
    "temperature -7.5 (#14)": (
        {"defaults": "temperature = -7.5"},
        "defaults.temperature must be between 0 and 2, got -7.5",
    ),
    "top_p -1 (#14)": ({"defaults": "top_p = -1"}, "defaults.top_p must be between 0 and 1"),
    "seed for the llama format": (
        {"defaults": "seed = 7", "provider": "llama"},
        "models[0] (m1): defaults.seed is not a setting of the llama wire format",
    ),
    "reserved in extra_body": (
        {"model": 'params = { extra_body = { model = "x" } }'},
        "models[0].params.extra_body.model is reserved",
    ),
    "provder": (
        {"model": "provder = 'sim'"},
        "unknown key models[0].provder (did you mean provider?)",
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", CONFIG_CASES)
async def test_a_bad_setting_in_a_config_is_one_line_and_nothing_is_sent(
    tmp_path: Path, sim: SimServer, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    settings, message = CONFIG_CASES[case]
    prompts = write_jsonl(tmp_path / "p.jsonl", [ROW])
    err = await refused(sim, capsys, config(tmp_path, sim.base_url, prompts, **settings))
    assert err.startswith(f"llamabatch: error: {tmp_path / 'c.toml'}: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_unknown_keys_come_first_with_a_guess(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nmae` used to say `models[0].name is required`; `provder`, `base_url is required`."""
    path = tmp_path / "c.toml"
    path.write_text("[run]\n[[models]]\nnmae = 'a'\nprovder = 'sim'\n")  # and no run.input
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"llamabatch: error: {path}: unknown keys models[0].nmae (did you mean name?), "
        "models[0].provder (did you mean provider?)\n"
    )


ROW_CASES = {
    "model in row params": (
        {**ROW, "params": {"model": "gpt-4o"}},
        "p.jsonl:1: params.model is reserved",
    ),
    "messages in row params": (
        {**ROW, "params": {"messages": [{"role": "user", "content": "x"}]}},
        "p.jsonl:1: params.messages is reserved: the prompt decides them",
    ),
    "stream in row params": ({**ROW, "params": {"stream": True}}, "params.stream is reserved"),
    "stream_options in row params": (
        {**ROW, "params": {"stream_options": {"include_usage": False}}},
        "params.stream_options is reserved",
    ),
    "role usr": (
        {"id": "u", "messages": [{"role": "usr", "content": "hi"}]},
        "p.jsonl:1: messages[0].role 'usr' is not a chat role (did you mean user?)",
    ),
    "role human": (
        {"id": "h", "messages": [{"role": "human", "content": "hi"}]},
        "p.jsonl:1: messages[0].role 'human' is not a chat role (did you mean user?)",
    ),
    "temprature in a row": (
        {**ROW, "params": {"temprature": 0.2}},
        "params.temprature is not a request setting (did you mean temperature?)",
    ),
    "max_tokens over the window": (
        {**ROW, "params": {"max_tokens": 5000}},
        "p.jsonl:1: params.max_tokens = 5000 exceeds the 4096-token context window of m1",
    ),
    "developer for the llama format": (
        {"id": "d", "messages": [{"role": "developer", "content": "x"}, ROW | {"role": "user"}]},
        "messages[0].role 'developer' is not a role of the llama wire format",
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", ROW_CASES)
async def test_a_bad_row_is_one_line_naming_file_row_and_key_and_nothing_is_sent(
    tmp_path: Path, sim: SimServer, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    row, message = ROW_CASES[case]
    if "messages" in row:
        row["messages"] = [{"role": m["role"], "content": "x"} for m in row["messages"]]
    prompts = write_jsonl(tmp_path / "p.jsonl", [row, {"id": "fine", "prompt": "ok"}])
    provider = "llama" if "llama" in case else "openai"
    path = config(tmp_path, sim.base_url, prompts, model="context_tokens = 4096", provider=provider)
    err = await refused(sim, capsys, path)
    assert message in err, err
    assert err.startswith(f"llamabatch: error: {prompts}:1: "), err


@pytest.mark.anyio
async def test_a_nan_temperature_in_parquet_is_an_error_not_null(
    tmp_path: Path, sim: SimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.parquet"
    table = pa.table(
        {
            "id": ["a", "b"],
            "prompt": ["x", "y"],
            "params": [{"temperature": 0.5}, {"temperature": float("nan")}],
        }
    )
    pq.write_table(table, prompts)
    err = await refused(sim, capsys, config(tmp_path, sim.base_url, prompts))
    assert f"{prompts}: row 2: params.temperature must be a finite number, got nan" in err


@pytest.mark.anyio
async def test_a_null_in_a_parquet_rows_params_is_unset_not_sent(
    tmp_path: Path, sim: SimServer
) -> None:
    """A Parquet struct holds every key of every row: the ones a row lacks come back null."""
    prompts = tmp_path / "p.parquet"
    params = [{"temperature": 0.5}, {"max_tokens": 5}]
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["x", "y"], "params": params}), prompts)
    result = await arun(config(tmp_path, sim.base_url, prompts), check=False)
    assert result.exit_code == 0 and sim.stats.requests == 2
    sent = pd.read_parquet(tmp_path / "out").set_index("prompt_id")["request_params"]
    assert json.loads(sent["a"]) == {"temperature": 0.5}
    assert json.loads(sent["b"]) == {"max_tokens": 5}


@pytest.mark.anyio
@pytest.mark.parametrize("quiet", [False, True])
async def test_an_empty_prompt_file_is_one_line_exit_2(
    tmp_path: Path, sim: SimServer, capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n")
    path = config(tmp_path, sim.base_url, prompts)
    err = await refused(sim, capsys, path, *(["-q"] if quiet else []))
    assert (
        err == f"llamabatch: error: {prompts}: the prompt file is empty; there is nothing to send"
    )
    assert not (tmp_path / "out").exists()


class Recorder:
    """A real HTTP server answering each wire format's non-streamed reply; keeps every body."""

    REPLIES: ClassVar[dict[str, dict[str, Any]]] = {
        "openai": {
            "choices": [
                {"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
        "llama": {
            "completion_message": {"content": {"type": "text", "text": "ok"}, "stop_reason": "stop"}
        },
        "ollama": {"message": {"role": "assistant", "content": "ok"}, "done": True},
    }

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        for fmt, path in (
            ("openai", "/openai/chat/completions"),
            ("llama", "/llama/chat/completions"),
        ):
            app.router.add_post(path, self._answer(fmt))
        app.router.add_post("/ollama/api/chat", self._answer("ollama"))
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def _answer(self, fmt: str) -> Any:
        async def answer(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.json_response(self.REPLIES[fmt])

        return answer


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "llama", "ollama"])
async def test_extra_body_reaches_the_server_untouched(tmp_path: Path, provider: str) -> None:
    rows = [ROW, {"id": "p1", "prompt": "yo", "params": {"extra_body": {"guided_choice": ["b"]}}}]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    async with Recorder() as server:
        path = config(
            tmp_path,
            f"{server.url}/{provider}",
            prompts,
            defaults="max_tokens = 8\nextra_body = { best_of = 2, guided_choice = ['a'] }",
            model="stream = false\nparams = { extra_body = { options = { num_gpu = 1 } } }",
            provider=provider,
        )
        result = await arun(path, check=False)  # the API: a CLI run wants the main thread
    assert result.exit_code == 0
    by_prompt = {b["messages"][-1]["content"]: b for b in server.bodies}
    for text, choice in (("hi", ["a"]), ("yo", ["b"])):
        body = by_prompt[text]
        assert "extra_body" not in body
        assert body["best_of"] == 2 and body["guided_choice"] == choice
        if provider == "ollama":  # Ollama's options: the settings llamabatch mapped, and more
            assert body["options"] == {"num_predict": 8, "num_gpu": 1}
        else:
            assert body["options"] == {"num_gpu": 1}
    stored = pd.read_parquet(tmp_path / "out").set_index("prompt_id")["request_params"]
    assert json.loads(stored["p1"])["extra_body"] == {
        "best_of": 2,
        "guided_choice": ["b"],
        "options": {"num_gpu": 1},
    }


@pytest.mark.parametrize(
    ("sim", "message"),
    [
        ("{ speed = 3 }", "sim.speed is not a simulator setting"),
        ("{ tokens_per_sec = 3 }", "sim.tokens_per_sec is not a simulator setting (did you mean"),
        ("{ ttft_s = nan }", "sim.ttft_s must be a finite number >= 0, got nan"),
        ("{ output_tokens = 1.5 }", "sim.output_tokens must be an integer, got 1.5"),
        ("{ stream_usage = 1 }", "sim.stream_usage must be true or false"),
    ],
)
def test_a_bad_sim_table_is_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sim: str, message: str
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [ROW])
    path = tmp_path / "c.toml"
    path.write_text(
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        f"[[models]]\nname = 'm1'\nprovider = 'sim'\nsim = {sim}\n"
    )
    assert main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llamabatch: error: {path}: model 'm1': {message}"), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_judges_params_are_checked_like_a_models(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [ROW])
    path = config(tmp_path, "http://127.0.0.1:9/v1", prompts)
    scorer = "[[scorers]]\nname = 'j'\ntype = 'judge'\nmodel = 'm1'\nrubric = 'r'\n"
    path.write_text(path.read_text() + scorer + "params = { stream = true }\n")
    with pytest.raises(ConfigError, match=r"scorers \(j\): params\.stream is reserved"):
        load_config(path)
    path.write_text(path.read_text().replace("stream = true", "temprature = 0"))
    with pytest.raises(ConfigError, match=r"params\.temprature .*did you mean temperature"):
        load_config(path)
