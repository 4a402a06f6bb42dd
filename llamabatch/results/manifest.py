"""`_manifest.json`: a run's config snapshot (no secrets), versions, times, counts, health."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from llamabatch._version import __version__
from llamabatch.results.atomic import replace_atomically, storage
from llamabatch.results.remote import remote_of

MANIFEST: Final = "_manifest.json"


def read_manifest(output: Path) -> dict[str, Any] | None:
    """The manifest of `output` (or of the URI it stages for), if it has one."""
    remote = remote_of(output)
    if remote is not None:
        raw = remote.read(MANIFEST)
        return None if raw is None else dict(json.loads(raw))
    path = output / MANIFEST
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_manifest(output: Path, manifest: Mapping[str, Any]) -> None:
    """Replace the manifest atomically (write a temporary file, fsync, rename, fsync the folder)."""
    text = json.dumps(manifest, indent=2, default=str) + "\n"
    remote = remote_of(output)
    if remote is not None:  # an object is replaced whole
        remote.write(MANIFEST, text.encode())
        return
    with storage(output / MANIFEST):
        replace_atomically(output / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def versions() -> dict[str, str]:
    import aiohttp
    import anyio

    return {
        "llamabatch": __version__,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "anyio": getattr(anyio, "__version__", "unknown"),
        "pyarrow": pa.__version__,
    }


def client_warning(client: dict[str, Any] | None) -> str | None:
    """One line saying the figures are inflated, when the client was the bottleneck."""
    if not client or not client.get("client_bound"):
        return None
    share = client.get("cpu_share")
    cpu = "not known" if share is None else f"{share:.0%} of a core"
    return (
        f"warning: the client was the bottleneck (event-loop lag p99 "
        f"{client['loop_lag_p99_ms']:.0f} ms, CPU {cpu}): "
        "latency and TTFT figures may include client-side delay; lower concurrency or use a "
        "faster machine"
    )
