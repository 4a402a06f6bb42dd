"""What a request may carry: reserved names, known settings per wire format, roles, extra_body."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from llamabatch.config import ModelConfig
from llamabatch.requestspec import (
    IMPORT_DROPPED_PARAMS,
    RESERVED_PARAMS,
    content_problem,
    merge_params,
    messages_problem,
    params_problem,
    role_problem,
)
from llamabatch.wire.formats import provider_for


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_token": 32}, "params.max_token is not a request setting (did you mean max_tokens?)"),
        ({"temprature": 0.2}, "params.temprature is not a request setting (did you mean temp"),
        ({"max_tokens": "32"}, "params.max_tokens must be an integer, got '32'"),
        ({"max_tokens": -5}, "params.max_tokens must be >= 1, got -5"),
        ({"max_tokens": 32.0}, "params.max_tokens must be an integer"),
        ({"temperature": "hot"}, "params.temperature must be a number, got 'hot'"),
        ({"temperature": -7.5}, "params.temperature must be between 0 and 2, got -7.5"),
        ({"temperature": math.nan}, "params.temperature must be a finite number, got nan"),
        ({"temperature": True}, "params.temperature must be a number, got True"),
        ({"top_p": -1}, "params.top_p must be between 0 and 1, got -1"),
        ({"seed": 2**70}, "params.seed is out of range"),
        ({"stop": ["a", 1]}, "params.stop must be a string or a list of strings"),
        ({"top_logprobs": 21}, "params.top_logprobs must be between 0 and 20"),
        ({"logit_bias": {"50256": 101}}, "params.logit_bias ['50256'] must be between -100"),
        ({"logit_bias": {"x": 1}}, "params.logit_bias keys must be token ids"),
        ({"tool_choice": "sometimes"}, "params.tool_choice must be one of none, auto, required"),
        ({"response_format": "json"}, 'params.response_format must be a table with a "type"'),
        ({"extra_body": [1]}, "params.extra_body must be a table"),
        ({"extra_body": {"model": "x"}}, "params.extra_body.model is reserved"),
        ({"extra_body": {"a": [math.inf]}}, "params.extra_body holds a number that is not finite"),
    ],
)
def test_a_bad_setting_is_named_with_what_is_wrong(params: dict[str, Any], message: str) -> None:
    problem = params_problem(params)
    assert problem is not None and problem.startswith(message), problem


@pytest.mark.parametrize("key", RESERVED_PARAMS)
def test_reserved_names_are_refused_everywhere(key: str) -> None:
    for where in ("defaults", "params"):
        problem = params_problem({key: 1}, where)
        assert problem is not None and problem.startswith(f"{where}.{key} is reserved: "), problem
    assert set(IMPORT_DROPPED_PARAMS) <= set(RESERVED_PARAMS)


def test_known_settings_pass_and_each_format_takes_its_own() -> None:
    every = {
        "temperature": 0.7,
        "top_p": 1,
        "top_k": 40,
        "max_tokens": 64,
        "stop": "\n",
        "seed": -3,
        "presence_penalty": -2,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "logprobs": True,
        "extra_body": {"best_of": 2, "guided_choice": ["a", "b"]},
    }
    assert params_problem(every) is None
    assert params_problem(every, provider="openai") is None
    assert params_problem(every, provider="sim") is None
    llama = params_problem({"seed": 1}, "defaults", provider="llama")
    assert llama is not None and "defaults.seed is not a setting of the llama wire format" in llama
    assert "move it to defaults.extra_body" in llama
    assert params_problem({"max_completion_tokens": 9, "top_k": 5}, provider="llama") is None
    assert params_problem({"num_ctx": 8192, "keep_alive": "5m"}, provider="ollama") is None
    assert params_problem({"num_ctx": 8192}, provider="openai") is not None
    embed = {"dimensions": 256, "encoding_format": "base64"}
    assert params_problem(embed, provider="openai", task="embed") is None
    assert params_problem({"temperature": 0}, provider="openai", task="embed") is not None


def test_roles_and_content_per_wire_format() -> None:
    for role, meant in (("usr", "user"), ("human", "user"), ("gpt", "assistant")):
        problem = role_problem(role, "messages[0].role")
        assert problem is not None and f"(did you mean {meant}?)" in problem, problem
    assert role_problem("developer", "r") is None and role_problem("ipython", "r") is None
    llama = role_problem("developer", "messages[0].role", "llama")
    assert llama is not None and "not a role of the llama wire format" in llama
    assert role_problem("developer", "r", "sim") is None
    assert role_problem("ipython", "r", "openai") is not None
    assert role_problem("ipython", "r", "llama") is None
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert content_problem(parts, "c", "openai") is None
    assert content_problem(parts, "c", "llama") is None
    ollama = content_problem(parts, "c", "ollama")
    assert ollama is not None and "must be a string for Ollama" in ollama
    audio = content_problem([{"type": "input_audio"}], "c", "llama")
    assert audio is not None and "'input_audio' is not a content part of the llama" in audio
    assert content_problem([{"type": "txt"}], "c") is not None
    assert content_problem([{"type": "text", "text": 3}], "c") == "c[0].text must be a string"
    good = [{"role": "system", "content": "s"}, {"role": "user", "content": parts}]
    assert messages_problem(good, "openai") is None
    assert messages_problem(good, "ollama") is not None


def test_extra_body_merges_key_by_key_and_goes_into_every_body_untouched() -> None:
    merged = merge_params(
        {"temperature": 0, "extra_body": {"a": 1, "b": 1}},
        {"extra_body": {"b": 2}},
        {"max_tokens": 5},
    )
    assert merged == {"temperature": 0, "max_tokens": 5, "extra_body": {"a": 1, "b": 2}}
    extra = {"best_of": 3, "guided_json": {"type": "object"}, "options": {"num_gpu": 1}}
    params = {"max_tokens": 5, "stop": "x", "extra_body": extra}
    messages = [{"role": "user", "content": "hi"}]
    for provider in ("openai", "llama", "ollama"):
        model = ModelConfig(name="m", provider=provider, model="m", base_url="http://h/v1")
        body = orjson.loads(
            provider_for(provider).build_request(model, messages, params, None).body
        )
        assert "extra_body" not in body
        assert body["best_of"] == 3 and body["guided_json"] == {"type": "object"}, provider
        if provider == "ollama":  # a table merges into the one llamabatch built
            assert body["options"] == {"num_predict": 5, "stop": ["x"], "num_gpu": 1}
        else:
            assert body["options"] == {"num_gpu": 1}
