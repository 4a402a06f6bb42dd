"""Issue #14, bad input (case 5): every error a user can cause is one line, exit 2, nothing sent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamabatch.cli.commands import main
from tests.helpers import write_jsonl

KEY = "sk-live-0123456789abcdef"


def config_text(tmp_path: Path, base_url: str, *, engine: str = "", model: str = "") -> str:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "p0", "prompt": "hi"}])
    return (
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        f"[engine]\n{engine or 'timeout_s = 10'}\n"
        f"[[models]]\nname = 'm1'\nprovider = 'openai'\nbase_url = '{base_url}'\n{model}\n"
    )


BAD_CONFIGS = {
    "timeout inf": ({"engine": "timeout_s = inf"}, "engine.timeout_s must be a finite number"),
    "timeout nan": ({"engine": "timeout_s = nan"}, "engine.timeout_s must be a finite number"),
    "huge backoff": ({"engine": "backoff_max_s = 1e300"}, "backoff_max_s must be a finite"),
    "concurrency 1e9": ({"engine": "concurrency = 1000000000"}, "must be at most 10,000"),
    "CR/LF header": (
        {"model": 'headers = { "X-Org" = "a\\r\\nX-Evil: 1" }'},
        "headers.X-Org holds a line break",
    ),
    "bad header name": ({"model": 'headers = { "X Org" = "a" }'}, "not a valid header name"),
    "user:password@": ({"url": "http://user:{key}@127.0.0.1:{port}/v1"}, "holds credentials"),
    "key in query": ({"url": "http://127.0.0.1:{port}/v1?api_key={key}"}, "query (api_key=...)"),
    "price inf": (
        {"model": "usd_per_mtok = { input = inf, output = 1 }"},
        "usd_per_mtok.input must be a finite number",
    ),
}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket standing in for the server: a request would show as a connection."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def nothing_sent(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return True
    return False


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_case_05_bad_config_is_one_line_exit_2_nothing_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listener: socket.socket, case: str
) -> None:
    edit, message = BAD_CONFIGS[case]
    port = listener.getsockname()[1]
    url = edit.get("url", "http://127.0.0.1:{port}/v1").format(key=KEY, port=port)
    config = tmp_path / "c.toml"
    config.write_text(
        config_text(tmp_path, url, engine=edit.get("engine", ""), model=edit.get("model", ""))
    )
    code = main(["run", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and nothing_sent(listener)
    assert err.count("\n") == 1 and message in err and str(config) in err, err
    assert KEY not in err
    assert not (tmp_path / "out").exists()
