"""How a run sends its requests: online or through Batch APIs, and with a response cache or not."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from llamabatch.config.endpoints import PRESETS, SIM_BATCH, BatchApi, Preset
from llamabatch.config.schema import MAX_WORKERS, CacheConfig, RunConfig
from llamabatch.config.settings import Table
from llamabatch.errors import ConfigError

CACHE_FILE: Final = "responses.sqlite3"
_TTL_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_TTL_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

Fail = Callable[[str, str], ConfigError]
log = logging.getLogger(__name__)


def default_cache_path(environ: Any = None) -> Path:
    """The cache file under the user's cache directory ($XDG_CACHE_HOME, else ~/.cache)."""
    env = os.environ if environ is None else environ
    root = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "llamabatch" / CACHE_FILE


def cache_path(value: str | Path | bool) -> Path | None:
    """`cache = "PATH"` (a file, or a directory to hold one), `true` (the default) or `false`."""
    if value is False:
        return None
    if value is True or value == "":
        return default_cache_path()
    path = Path(value).expanduser()
    return path / CACHE_FILE if path.is_dir() or str(value).endswith(os.sep) else path


def parse_ttl(value: Any, fail: Fail) -> float | None:
    """`cache_ttl`: seconds as a number, or a string such as "90s", "30m", "12h", "7d"."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _TTL_RE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise fail(
            "cache_ttl", f'must be a positive number of seconds or like "12h", "7d"; got {value!r}'
        )
    return float(match.group(1)) * _TTL_UNITS[match.group(2)]


def parse_workers(value: Any, fail: Fail, name: str = "workers") -> int:
    """`[engine] workers` / --workers: a number of processes, or "auto" (one per core)."""
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WORKERS:
        raise fail(name, f'must be 1..{MAX_WORKERS} processes or "auto"; got {value!r}')
    return value


def with_workers(config: RunConfig, workers: int | str | None) -> RunConfig:
    """`config` with the command line's --workers, when given, and no more workers than
    the smallest concurrency (see `within_concurrency`)."""
    if workers is not None:

        def fail(name: str, message: str) -> ConfigError:
            return ConfigError(f"--workers {message}")

        engine = dataclasses.replace(config.engine, workers=parse_workers(workers, fail))
        config = dataclasses.replace(config, engine=engine)
    return within_concurrency(config)


def within_concurrency(config: RunConfig) -> RunConfig:
    """Fewer workers when a model's concurrency is smaller than their number.

    A worker sends at least one request at a time, so `workers = 4` with
    `concurrency = 1` (a local llama.cpp server) would send four at once: the
    limits are shared exactly, so the run uses as many workers as the smallest
    concurrency allows, and says so.
    """
    workers = config.engine.workers
    if workers <= 1:
        return config
    if config.mode == "batch":
        log.warning(
            "workers = %d not used: batch mode submits its batches from one process", workers
        )
        return config
    cap = config.engine.concurrency
    smallest, name = min((min(m.concurrency or cap, cap), m.name) for m in config.models)
    if smallest >= workers:
        return config
    log.warning(
        "workers = %d lowered to %d: %s's concurrency is %d, and every worker sends at "
        "least one request at a time",
        workers,
        smallest,
        name,
        smallest,
    )
    engine = dataclasses.replace(config.engine, workers=smallest)
    return dataclasses.replace(config, engine=engine)


def cache_config(value: Any, ttl_s: float | None, fail: Fail) -> CacheConfig | None:
    if value is None:
        if ttl_s is not None:
            raise fail("cache_ttl", "needs cache (a path, or true for the default one)")
        return None
    if not isinstance(value, str | bool):
        raise fail("cache", f"must be a path or true/false, got {value!r}")
    path = cache_path(value)
    return None if path is None else CacheConfig(path=path, ttl_s=ttl_s)


def cache_override(
    configured: CacheConfig | None, cache: str | Path | bool | None, refresh: bool
) -> CacheConfig | None:
    """The cache the command line asks for, on top of the config's."""
    path = configured.path if configured is not None and cache in (None, True) else None
    if path is None and cache is not None:
        path = cache_path(cache)
    if path is None:
        if cache is False:
            return None
        raise ConfigError("--cache-refresh needs a cache: give --cache [PATH] or [run] cache")
    ttl = configured.ttl_s if configured is not None else None
    return CacheConfig(path=path, ttl_s=ttl, refresh=refresh)


def model_batch(sec: Table, preset: Preset, provider: str) -> tuple[BatchApi | None, float]:
    """A model's Batch API and its `batch_discount` (the preset's unless the model sets one)."""
    batch = batch_api(preset, provider)
    discount = sec.positive("batch_discount", float, batch.discount if batch else 1.0)
    if discount > 1:
        raise sec.error("batch_discount", f"is a price multiplier between 0 and 1, got {discount}")
    return batch, float(discount)


def batch_api(preset: Preset, provider: str) -> BatchApi | None:
    """The Batch API a model's endpoint offers: its preset's, the simulator's, or none."""
    if provider == "sim":
        return SIM_BATCH
    return preset.batch if provider == "openai" else None


def check_batch(config: RunConfig) -> None:
    """Batch mode: refuse, before anything is sent, a model whose endpoint has no Batch API."""
    for model in config.models:
        if model.task == "embed":
            raise ConfigError(
                f'{config.source}: model {model.name!r} has task = "embed": embeddings are sent '
                "online (packed per request), not through a Batch API; run it online"
            )
        if model.batch is None:
            where = f"preset {model.preset}" if model.preset else f"provider {model.provider}"
            with_batch = ", ".join(n for n, p in PRESETS.items() if p.batch is not None)
            raise ConfigError(
                f"{config.source}: model {model.name!r} ({where}) has no Batch API, so it cannot "
                f'run in mode = "batch"; presets with one: {with_batch} (and provider sim); '
                "leave the model out with --models, or run online"
            )
