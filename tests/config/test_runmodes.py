"""Run modes in configs: batch mode and its refusals, the response cache settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import ConfigError, config_from_dict, load_config
from llamabatch.config.load import apply_overrides
from llamabatch.config.runmodes import check_batch, default_cache_path


def _config(run: dict[str, object] | None = None, **model: object) -> dict[str, object]:
    return {
        "run": {"input": "p.jsonl", **(run or {})},
        "models": [{"name": "a", "model": "x", **(model or {"provider": "sim"})}],
    }


def test_mode_and_cache_settings() -> None:
    config = config_from_dict(_config({"mode": "batch", "cache": "c.db", "cache_ttl": "12h"}))
    assert config.mode == "batch" and config.cache is not None
    assert config.cache.path == Path("c.db") and config.cache.ttl_s == 12 * 3600
    assert config_from_dict(_config({"cache": True})).cache.path == default_cache_path()  # type: ignore[union-attr]
    assert config_from_dict(_config({"cache": False})).cache is None
    assert config_from_dict(_config({"cache_ttl": 60, "cache": "c"})).cache.ttl_s == 60.0  # type: ignore[union-attr]


def test_default_cache_path_follows_xdg() -> None:
    assert default_cache_path({"XDG_CACHE_HOME": "/x"}) == Path("/x/llamabatch/responses.sqlite3")


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"mode": "bulk"}, r"run\.mode must be one of online, batch"),
        ({"cache": "c", "cache_ttl": "soon"}, r"run\.cache_ttl must be a positive number"),
        ({"cache_ttl": 5}, r"run\.cache_ttl needs cache"),
    ],
)
def test_bad_mode_and_cache_settings(run: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_config(run))


def test_command_line_overrides() -> None:
    config = config_from_dict(_config({"cache": "c", "cache_ttl": 9}))
    refreshed = apply_overrides(config, batch=True, cache_refresh=True)
    assert refreshed.mode == "batch" and refreshed.cache is not None
    assert (
        refreshed.cache.refresh and refreshed.cache.ttl_s == 9 and refreshed.cache.path == Path("c")
    )
    assert apply_overrides(config, cache="d").cache.path == Path("d")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="--cache-refresh needs a cache"):
        apply_overrides(config_from_dict(_config()), cache_refresh=True)


def test_presets_record_batch_support_limits_and_discount() -> None:
    openai = config_from_dict(_config(preset="openai")).models[0]
    assert openai.batch is not None and openai.batch.max_requests == 50_000
    assert openai.batch.max_bytes == 200 * 1024 * 1024 and openai.batch_discount == 0.5
    groq = config_from_dict(_config(preset="groq")).models[0]
    assert groq.batch_discount == 0.75
    together = config_from_dict(_config(preset="together")).models[0]
    assert together.batch is not None and together.batch.file_purpose == "batch-api"
    own = config_from_dict(_config(preset="openai", batch_discount=0.4)).models[0]
    assert own.batch_discount == 0.4
    assert config_from_dict(_config(preset="meta")).models[0].batch is None
    with pytest.raises(ConfigError, match=r"batch_discount is a price multiplier"):
        config_from_dict(_config(preset="openai", batch_discount=2))


def test_batch_mode_refuses_a_model_without_a_batch_api_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[run]\ninput = "p.jsonl"\nmode = "batch"\n\n'
        '[[models]]\nname = "sim-ok"\nprovider = "sim"\n\n'
        '[[models]]\nname = "maverick"\npreset = "meta"\nmodel = "Llama-4-Maverick"\n'
    )
    config = load_config(path)
    with pytest.raises(
        ConfigError,
        match=r"model 'maverick' \(preset meta\) has no Batch API.*openai, together, groq",
    ):
        check_batch(config)
    check_batch(load_config(path, models=["sim-ok"]))  # leaving it out is enough
