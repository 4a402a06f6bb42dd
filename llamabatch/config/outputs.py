"""`[run] output` as a directory or a URI (`s3://bucket/runs/x`: any `pyarrow.fs` filesystem).

A URI output keeps the results (Parquet parts, `_manifest.json`) at the URI and
what needs a local disk (journal segments, the lock file, the validation
cache) in a staging directory on each machine, named after the URI under
`$LLAMABATCH_STAGING` (default `~/.cache/llamabatch/staging`), which must be
on a disk that outlives the process: a killed run's journal waits there for
the next run to publish it. Credentials come from the filesystem's standard
places (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_PROFILE`, an instance role), never from the URI, which the manifest records.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from llamabatch.errors import ConfigError

STAGING_ENV: Final = "LLAMABATCH_STAGING"
_URI_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Query options pyarrow accepts that carry credentials: they would end up in the manifest.
_SECRET_OPTION_RE: Final = re.compile(r"key|secret|token|password|credential", re.I)
# Environment variables whose values are secrets when the output is on S3 (redacted).
CREDENTIAL_ENV: Final = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def is_uri(text: str) -> bool:
    return bool(_URI_RE.match(text))


def output_location(output: str | Path) -> tuple[Path, str | None]:
    """(the local directory a run writes, the URI its results go to or None)."""
    if isinstance(output, Path) or not is_uri(output):
        return Path(output), None
    parts = urlsplit(output)
    if parts.scheme == "file":
        return Path(parts.path), None
    where = "(set [run] output, or --output)"
    if parts.username or parts.password:
        raise ConfigError(
            f"output {parts.scheme}://…@{parts.hostname}{parts.path}: credentials in the URI would "
            f"be written to the manifest; use the standard environment variables {where}"
        )
    if any(_SECRET_OPTION_RE.search(name) for name, _ in parse_qsl(parts.query)):
        raise ConfigError(
            f"output {parts.scheme}://{parts.netloc}{parts.path}: credentials in the URI's options "
            f"would be written to the manifest; use the standard environment variables {where}"
        )
    return staging_dir(output), output


def staging_dir(uri: str) -> Path:
    """The local directory standing in for `uri` on this machine."""
    root = os.environ.get(STAGING_ENV)
    if root:
        base = Path(root)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "llamabatch" / "staging"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("?", 1)[0])[-60:].strip("_")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return base / f"{readable}-{digest}"
