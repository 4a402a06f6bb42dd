"""The response cache: keys, what is stored, expiry, refresh, and several processes at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from llamabatch.config import ModelConfig
from llamabatch.results.cache import CACHED_COLUMNS, ResponseCache, endpoint_label, request_key
from llamabatch.wire import provider_for

MODEL = ModelConfig(name="m", provider="openai", model="llama", base_url="http://h/v1")
MESSAGES = [{"role": "user", "content": "hi"}]
ROW = {"output_text": "hello", "completion_tokens": 3, "latency_s": 0.5, "prompt_id": "p1"}


def _request(model: ModelConfig, params: dict[str, object], key: str | None = "sk-secret") -> bytes:
    return provider_for("openai").build_request(model, MESSAGES, params, key).body


def test_a_key_covers_body_model_sample_and_endpoint_but_not_transport_or_secrets() -> None:
    body = _request(MODEL, {"temperature": 0, "max_tokens": 5})
    key = request_key("http://h/v1/chat/completions", body, "llama", 0)
    reordered = orjson.dumps(
        {"max_tokens": 5, "messages": MESSAGES, "model": "llama", "temperature": 0}
    )
    assert request_key("http://h/v1/chat/completions", reordered, "llama", 0) == key  # no stream
    unstreamed = _request(
        ModelConfig(**{**MODEL.__dict__, "stream": False}), {"temperature": 0, "max_tokens": 5}
    )
    assert request_key("http://h/v1/chat/completions", unstreamed, "llama", 0) == key
    assert request_key("http://h/v1/chat/completions", body, "llama", 1) != key
    assert request_key("http://other/v1/chat/completions", body, "llama", 0) != key
    hotter = _request(MODEL, {"temperature": 1, "max_tokens": 5})
    assert request_key("http://h/v1/chat/completions", hotter, "llama", 0) != key
    assert b"sk-secret" not in body  # the key travels in a header, never in the body


def test_a_started_simulator_is_known_by_its_settings_not_its_port() -> None:
    sim = ModelConfig(name="s", provider="sim", model="x", sim={"accuracy": 0.5})
    assert endpoint_label(sim) == endpoint_label(ModelConfig(**{**sim.__dict__}))
    assert endpoint_label(sim) != endpoint_label(ModelConfig(**{**sim.__dict__, "sim": {}}))
    assert endpoint_label(MODEL) == "http://h/v1"


def test_stored_answers_come_back_without_the_rows_identity(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cache.put("k", ROW)
    assert cache.get("k") is None  # queued, not yet written
    cache.flush()
    stored = cache.get("k")
    assert stored is not None and stored["output_text"] == "hello" and stored["latency_s"] == 0.5
    assert "prompt_id" not in stored and set(stored) == set(CACHED_COLUMNS)
    cache.close()
    reopened = ResponseCache(tmp_path / "c.sqlite3", refresh=True)
    assert reopened.get("k") is None  # refresh: ask again
    reopened.put("k", {**ROW, "output_text": "new"})
    reopened.close()
    assert ResponseCache(tmp_path / "c.sqlite3").get("k")["output_text"] == "new"  # type: ignore[index]


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cache.put("k", ROW)
    cache.flush()
    cache._db.execute("UPDATE responses SET stored_at = stored_at - 100")
    assert ResponseCache(tmp_path / "c.sqlite3", ttl_s=50).get("k") is None
    assert ResponseCache(tmp_path / "c.sqlite3", ttl_s=500).get("k") is not None


WRITER = """
import sys
from pathlib import Path
from llamabatch.results.cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for i in range(400):
    cache.put(f"{sys.argv[2]}-{i}", {"output_text": str(i)})
    if i % 20 == 0:
        cache.flush()
        cache.get(f"{sys.argv[2]}-{i}")
cache.close()
"""


def test_concurrent_processes_share_one_cache_without_corrupting_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}"]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    cache = ResponseCache(path)
    assert cache._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert cache._db.execute("SELECT count(*) FROM responses").fetchone() == (1600,)
    assert cache.get("w3-399") == {
        c: ("399" if c == "output_text" else None) for c in CACHED_COLUMNS
    }
