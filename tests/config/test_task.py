"""A model's `task`: chat (the default) or embed, with how an embedding request packs inputs."""

from __future__ import annotations

from typing import Any

import pytest

from llamabatch import ConfigError, config_from_dict
from llamabatch.config import RunConfig
from llamabatch.results.identity import fingerprint


def config(defaults: dict[str, Any] | None = None, **model: Any) -> RunConfig:
    entry = {"name": "e", "provider": "openai", "model": "m", "base_url": "http://h/v1", **model}
    return config_from_dict(
        {"run": {"input": "p.jsonl"}, "defaults": defaults or {}, "models": [entry]},
        source="c.toml",
    )


def test_chat_by_default_and_embed_with_its_batch_settings() -> None:
    (chat,) = config().models
    assert (chat.task, chat.batch_inputs, chat.batch_tokens) == ("chat", 64, 8192)
    (embed,) = config(task="embed", batch_inputs=128, batch_tokens=16_000).models
    assert (embed.task, embed.batch_inputs, embed.batch_tokens) == ("embed", 128, 16_000)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"task": "rank"}, r"c.toml: models\[0\] \(e\).task must be one of chat, embed"),
        ({"task": "embed", "batch_inputs": 0}, "batch_inputs must be > 0"),
        ({"batch_inputs": 16}, 'batch_inputs applies to task = "embed" only'),
        ({"task": "embed", "provider": "llama"}, "Llama API has no embeddings"),
    ],
)
def test_bad_task_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config(**settings)
    assert "\n" not in str(info.value)


def test_an_embedding_model_ignores_generation_defaults() -> None:
    defaults = {"max_tokens": 999_999_999}  # would not fit any chat model's context
    (embed,) = config(defaults, task="embed", model="Llama-3.3-70B-Instruct").models
    snapshot = config(defaults, task="embed").snapshot()
    assert embed.task == "embed"
    # Changing [defaults] does not make an embedding model's stored rows incomparable.
    model = snapshot["models"][0]
    assert fingerprint({"temperature": 0.5}, model) == fingerprint({}, model)


def test_an_embedding_model_is_refused_in_batch_mode() -> None:
    from llamabatch.config.runmodes import check_batch

    with pytest.raises(ConfigError, match='task = "embed": embeddings are sent online'):
        check_batch(config(task="embed", provider="sim", base_url=None))
