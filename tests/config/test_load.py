from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import ConfigError, load_config

BASE = """
[run]
input = "prompts.jsonl"

[[models]]
name = "a"
provider = "openai"
model = "Llama-4-Scout-17B-16E-Instruct-FP8"
base_url = "https://api.llama.com/compat/v1"
api_key_env = "META_API_KEY"
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_shape(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.name == "c" and config.output == Path("results/c")
    assert config.engine.concurrency == 64 and config.engine.timeout_s == 120
    (model,) = config.models
    assert model.base_url == "https://api.llama.com/compat/v1" and model.stream


def test_env_interpolation(tmp_path: Path) -> None:
    text = BASE.replace('input = "prompts.jsonl"', 'input = "${DATA}/p.jsonl"')
    config = load_config(write(tmp_path, text), environ={"DATA": "/data"})
    assert config.input == Path("/data/p.jsonl")


def test_missing_env_variable_is_named(tmp_path: Path) -> None:
    text = BASE.replace('input = "prompts.jsonl"', 'input = "${NOPE_VAR}/p.jsonl"')
    with pytest.raises(ConfigError, match=r"c\.toml: run\.input uses \$\{NOPE_VAR\}"):
        load_config(write(tmp_path, text), environ={})


def test_missing_api_key_variable_is_named(tmp_path: Path) -> None:
    (model,) = load_config(write(tmp_path, BASE)).models
    with pytest.raises(ConfigError, match="META_API_KEY is not set"):
        model.resolve_api_key({})
    assert model.resolve_api_key({"META_API_KEY": "k"}) == "k"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[run]", "[run]\nrepeats = 0"), r"c\.toml: run\.repeats must be > 0"),
        (("[run]", "[run]\nrepeats = 'x'"), r"run\.repeats must be int"),
        (
            ("[run]", "[run]\ncolour = 1"),
            r"c\.toml: unknown key run\.colour \(did you mean columns\?\)$",
        ),
        (
            ('provider = "openai"', 'provider = "grpc"'),
            r"models\[0\] \(a\)\.provider must be one of",
        ),
        (('base_url = "https://api.llama.com/compat/v1"', ""), r"base_url is required"),
        (('base_url = "https://api.llama.com/compat/v1"', 'base_url = "api.llama.com"'), "http://"),
        (('name = "a"', 'name = "a b"'), r"models\[0\]\.name must be letters"),
        (('input = "prompts.jsonl"', ""), r"run\.input is required"),
    ],
)
def test_invalid_settings_name_file_and_key(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE.replace(*edit)))


def test_engine_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine\.concurrency must be > 0"):
        load_config(write(tmp_path, BASE + "\n[engine]\nconcurrency = 0\n"))


def test_duplicate_model_names(tmp_path: Path) -> None:
    text = BASE + BASE[BASE.index("[[models]]") :]
    with pytest.raises(ConfigError, match="two models are named 'a'"):
        load_config(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml: invalid TOML"):
        load_config(write(tmp_path, "[run\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_yaml_is_accepted(tmp_path: Path) -> None:
    text = """
run: {input: p.jsonl, name: y}
models:
  - {name: a, provider: sim}
"""
    config = load_config(write(tmp_path, text, "c.yaml"))
    assert config.name == "y" and config.models[0].provider == "sim"


def test_overrides(tmp_path: Path) -> None:
    text = BASE + BASE[BASE.index("[[models]]") :].replace('name = "a"', 'name = "b"')
    config = load_config(write(tmp_path, text), output="o", limit=3, models=["b"])
    assert config.output == Path("o") and config.limit == 3
    assert [m.name for m in config.models] == ["b"]
    with pytest.raises(ConfigError, match="no model named zz"):
        load_config(write(tmp_path, text), models=["zz"])


def test_inline_key_warns_and_is_redacted_from_snapshot(tmp_path: Path) -> None:
    text = BASE.replace('api_key_env = "META_API_KEY"', 'api_key = "sk-inline-secret"')
    with pytest.warns(UserWarning, match="inline api_key"):
        config = load_config(write(tmp_path, text))
    assert "sk-inline-secret" not in repr(config)
    assert "sk-inline-secret" not in str(config.snapshot())
    assert config.secrets() == ("sk-inline-secret",)
