"""Reading a run config: load TOML/YAML, interpolate ${VAR}, validate once, freeze."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from llamabatch.config.connection import check_base_url, headers
from llamabatch.config.endpoints import (
    MANAGED_SERVER,
    Preset,
    ServerSpec,
    check_tokenize,
    max_tokens_problem,
    preset_for,
    server_spec,
)
from llamabatch.config.engine_settings import build_engine, concurrency_setting
from llamabatch.config.inputs import input_layout, local_input
from llamabatch.config.keys import check_keys
from llamabatch.config.outputs import output_location
from llamabatch.config.runmodes import cache_config, cache_override, model_batch, parse_ttl
from llamabatch.config.schema import (
    DEFAULT_OUTPUT_ROOT,
    DEFAULT_SLO_ATTAINMENT,
    MODES,
    PROVIDERS,
    SLO_KEYS,
    ModelConfig,
    RunConfig,
)
from llamabatch.config.scorers import MODEL_SCORERS, ScorerSpec, parse_scorers
from llamabatch.config.settings import Table
from llamabatch.config.tasks import model_task
from llamabatch.errors import ConfigError
from llamabatch.requestspec import params_problem

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VAR_RE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Settings whose interpolated values are secrets (a key in a header, a token in a URL).
_SECRET_PLACE_RE: Final = re.compile(r"models\[\d+\]\.(headers|base_url|api_key)\b")


def load_config(
    path: str | Path,
    *,
    output: str | Path | None = None,
    limit: int | None = None,
    models: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Read, interpolate and validate a config file; CLI-style overrides win."""
    path = Path(path)
    raw = _read(path)
    env = os.environ if environ is None else environ
    interpolated: list[tuple[str, str]] = []
    data = _interpolate(raw, env, path, "", interpolated)
    config = _with_secrets(_build(data, path), interpolated)
    return apply_overrides(config, output=output, limit=limit, models=models)


def config_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> RunConfig:
    """Validate an in-memory config (same rules as a file, ${VAR} interpolated)."""
    path = Path(source)
    interpolated: list[tuple[str, str]] = []
    config = _build(_interpolate(dict(data), os.environ, path, "", interpolated), path)
    return _with_secrets(config, interpolated)


def _with_secrets(config: RunConfig, interpolated: list[tuple[str, str]]) -> RunConfig:
    """Remember the values of ${VAR}s used in headers, URLs and keys: they are secrets."""
    found = tuple(value for where, value in interpolated if _SECRET_PLACE_RE.match(where))
    return dataclasses.replace(config, secret_values=found) if found else config


def apply_overrides(
    config: RunConfig,
    *,
    output: str | Path | None = None,
    limit: int | None = None,
    models: Sequence[str] | None = None,
    batch: bool = False,
    cache: str | Path | bool | None = None,
    cache_refresh: bool = False,
) -> RunConfig:
    """Return `config` with command-line overrides applied (`cache=True`: the default path)."""
    changes: dict[str, Any] = {}
    if batch:
        changes["mode"] = "batch"
    if cache is not None or cache_refresh:
        changes["cache"] = cache_override(config.cache, cache, cache_refresh)
    if output is not None:
        changes["output"], changes["output_uri"] = output_location(output)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be a positive number, got {limit}")
        changes["limit"] = limit
    if models:
        known = {m.name: m for m in config.models}
        unknown = [name for name in models if name not in known]
        if unknown:
            raise ConfigError(
                f"--models: no model named {', '.join(unknown)} in {config.source}; "
                f"known: {', '.join(known)}"
            )
        changes["models"] = tuple(known[name] for name in models)
    return dataclasses.replace(config, **changes) if changes else config


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only YAML configs need it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    return data


def _interpolate(
    value: Any, env: Mapping[str, str], path: Path, where: str, found: list[tuple[str, str]]
) -> Any:
    """`value` with ${VAR}s replaced; `found` collects (setting, value) of each replacement."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{path}: {where or 'value'} uses ${{{name}}}, which is not set")
            found.append((where, env[name]))
            return env[name]

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, env, path, f"{where}.{k}" if where else str(k), found)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, env, path, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


class _Section(Table):
    """One table of the config file; errors read `<file>: <section>.<key> ...`."""

    def __init__(self, data: Any, path: Path, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        super().__init__(data, f"{path}: {where}")
        self.path = path
        self.where = where

    def rename(self, where: str) -> None:
        self.where = where
        self.label = f"{self.path}: {where}"

    def finish(self) -> None:
        if self.data:
            raise ConfigError(f"{self.path}: unknown setting in [{self.where}]: {self.leftover()}")


def _build(data: dict[str, Any], path: Path) -> RunConfig:
    check_keys(data, path)
    top = _Section(data, path, "config")
    run = _Section(top.data.pop("run", None), path, "run")
    engine_section = _Section(top.data.pop("engine", None), path, "engine")
    engine = build_engine(engine_section)
    engine_section.finish()
    defaults = _Section(top.data.pop("defaults", None), path, "defaults").data
    raw_models = top.data.pop("models", None)
    scorers = parse_scorers(top.data.pop("scorers", None), path)
    slo = _build_slo(_Section(top.data.pop("slo", None), path, "slo"))
    top.finish()

    name = run.get("name", str, path.stem)
    input_path = run.get("input", str)
    if input_path is None:
        raise ConfigError(f"{path}: run.input is required (the prompt set to read)")
    try:
        input_file = local_input(input_path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    output = run.get("output", str, f"{DEFAULT_OUTPUT_ROOT}/{name}")
    try:
        output_dir, output_uri = output_location(output)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    repeats = run.positive("repeats", int, 1)
    limit = run.positive("limit", int)
    skip_invalid = run.get("skip_invalid", bool, False)
    chunk_times = run.get("chunk_times", bool, False)
    mode = run.one_of("mode", MODES, "online")
    layout = input_layout(run)
    cache = cache_config(
        run.get("cache", (str, bool)),
        parse_ttl(run.get("cache_ttl", (int, float, str)), run.error),
        run.error,
    )
    run.finish()

    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(f"{path}: at least one [[models]] table is required")
    models = tuple(_build_model(m, path, i) for i, m in enumerate(raw_models))
    seen: set[str] = set()
    for index, model in enumerate(models):
        if model.name in seen:
            raise ConfigError(f"{path}: two models are named {model.name!r}; names must differ")
        seen.add(model.name)
        problem = _params_problem(model, index, defaults) or (
            model.task == "chat"
            and max_tokens_problem(model.model, {**defaults, **model.params}, model.context_tokens)
        )
        if problem:
            raise ConfigError(f"{path}: models[{index}] ({model.name}): {problem}")
    return RunConfig(
        scorers=scorers,
        judge_models=_judge_models(scorers, models, path),
        slo=slo,
        name=name,
        input=input_file,
        output=output_dir,
        output_uri=output_uri,
        models=models,
        repeats=repeats,
        limit=limit,
        skip_invalid=skip_invalid,
        chunk_times=chunk_times,
        engine=engine,
        defaults=defaults,
        source=path,
        mode=mode,
        cache=cache,
        **layout,
    )


def _params_problem(model: ModelConfig, index: int, defaults: dict[str, Any]) -> str | None:
    """What the model's wire format refuses of `[defaults]` (chat models) and its `params`."""
    problem = params_problem(model.params, "params", provider=model.provider, task=model.task)
    if model.task == "chat" and not problem:
        problem = params_problem(defaults, "defaults", provider=model.provider)
    return problem


def _build_slo(sec: _Section) -> dict[str, float]:
    """Service-level objectives: a row meets them when every threshold given holds."""
    slo = {key: sec.positive(key, float) for key in SLO_KEYS}
    attainment = sec.positive("attainment", float, DEFAULT_SLO_ATTAINMENT)
    if attainment > 1:
        raise sec.error("attainment", f"is a share between 0 and 1, got {attainment}")
    sec.finish()
    found = {k: v for k, v in slo.items() if v is not None}
    return {**found, "attainment": attainment} if found else {}


def _build_model(data: Any, path: Path, index: int) -> ModelConfig:
    sec = _Section(data, path, f"models[{index}]")
    name = sec.get("name", str)
    if name is None:
        raise sec.error("name", "is required (the label used in results)")
    if not _NAME_RE.match(name):
        raise sec.error("name", f"must be letters, digits, '.', '_' or '-', got {name!r}")
    sec.rename(f"models[{index}] ({name})")
    server = server_spec(sec.get("server", dict), sec.error)
    preset_name = sec.data.get("preset")
    preset, provider, base_url = _endpoint(sec, server)
    model_id = sec.get("model", str, name)
    if base_url is not None:
        check_base_url(base_url, sec)
    batch, discount = model_batch(sec, preset, provider)
    api_key = sec.get("api_key", str)
    if api_key is not None:
        warnings.warn(
            f"{path}: models[{index}] ({name}) has an inline api_key; "
            "prefer api_key_env so the key stays out of files",
            stacklevel=2,
        )
    model = ModelConfig(
        name=name,
        provider=provider,
        model=model_id,
        base_url=base_url.rstrip("/") if base_url else None,
        # An explicit empty api_key_env turns off a preset's key.
        api_key_env=sec.get("api_key_env", str, preset.api_key_env) or None,
        api_key=api_key,
        concurrency=concurrency_setting(sec, None),
        rpm=sec.positive("rpm", float),
        tpm=sec.positive("tpm", float),
        stream=sec.get("stream", bool, True),
        params=sec.get("params", dict, {}),
        headers=headers(sec),
        sim=sec.get("sim", dict, {}),
        tokenize=check_tokenize(sec.get("tokenize", str, preset.tokenize), sec.error),
        context_tokens=sec.positive("context_tokens", int),
        server=server,
        usd_per_mtok=_prices(sec),
        preset=preset_name,
        batch=batch,
        batch_discount=discount,
        **model_task(sec, provider),
    )
    sec.finish()
    return model


def _endpoint(sec: _Section, server: ServerSpec | None) -> tuple[Preset, str, str | None]:
    """The model's preset, wire format and base URL (explicit settings win over the preset)."""
    preset = preset_for(sec.get("preset", str), sec.error)
    if server is not None:
        preset = MANAGED_SERVER  # the base URL comes from the server once it is up
    provider = sec.get("provider", str, preset.provider)
    if provider not in PROVIDERS:
        raise sec.error("provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    base_url = sec.get("base_url", str, preset.base_url)
    if server is not None and (base_url is not None or provider != "openai"):
        raise sec.error("server", "starts its own OpenAI-compatible server: drop base_url/provider")
    if base_url is None and provider != "sim" and server is None:
        raise sec.error("base_url", f"is required for provider {provider!r} (or set a preset)")
    return preset, provider, base_url


def _prices(sec: _Section) -> dict[str, float]:
    prices = sec.get("usd_per_mtok", dict, {})
    if prices and set(prices) != {"input", "output"}:
        raise sec.error("usd_per_mtok", "must be { input = <USD>, output = <USD> } per 1M tokens")
    for key, value in prices.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
            raise sec.error(f"usd_per_mtok.{key}", f"must be a finite number >= 0, got {value!r}")
    return {k: float(v) for k, v in prices.items()}


def _judge_models(
    scorers: Sequence[ScorerSpec], models: Sequence[ModelConfig], path: Path
) -> tuple[ModelConfig, ...]:
    known = {m.name: m for m in models}
    judges: dict[str, ModelConfig] = {}
    for spec in scorers:
        task = MODEL_SCORERS.get(spec.type)
        if task is None:
            continue
        name = spec.options["model"]
        if name not in known:
            raise ConfigError(
                f"{path}: scorers ({spec.name}): model {name!r} is not one of the [[models]] "
                f"({', '.join(known)})"
            )
        if known[name].task != task:
            raise ConfigError(
                f'{path}: scorers ({spec.name}): a {spec.type} scorer needs a task = "{task}" '
                f"model; {name!r} is {known[name].task}"
            )
        problem = params_problem(
            spec.options.get("params", {}), "params", provider=known[name].provider
        )
        if problem:
            raise ConfigError(f"{path}: scorers ({spec.name}): {problem}")
        judges[name] = known[name]
    return tuple(judges.values())
