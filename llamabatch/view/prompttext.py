"""Prompt texts for the viewer: from the prompt set a run read, when that file is still there."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from llamabatch.prompts import Layout, PromptSet
from llamabatch.prompts.text import transcript
from llamabatch.view.catalog import Run

MAX_SEARCH_BYTES: Final = 64 * 2**20  # larger prompt sets are searched by output only
MAX_MATCHES: Final = 10_000


def prompt_file(run: Run) -> Path | None:
    path = (run.manifest.get("input") or {}).get("path")
    return Path(path) if path and Path(path).is_file() else None


def layout(run: Run) -> Layout:
    """How the run read its prompt file (format, column mapping), from its config snapshot."""
    return Layout.of(run.manifest.get("config") or {})


def prompt_text(run: Run, prompt_id: str) -> str | None:
    path = prompt_file(run)
    if path is None:
        return None
    try:
        for prompt in PromptSet(path, layout=layout(run)):
            if prompt.id == prompt_id:
                return transcript(prompt.messages)
    except Exception:  # the page is still useful without the prompt's text
        return None
    return None


def search_prompts(run: Run, q: str) -> frozenset[str]:
    """Ids of prompts whose text contains `q` (any case); empty for a huge or missing file."""
    path = prompt_file(run)
    if path is None or not q:
        return frozenset()
    stat = path.stat()
    if stat.st_size > MAX_SEARCH_BYTES:
        return frozenset()
    try:
        how = layout(run)
    except Exception:
        return frozenset()
    return _search(str(path), stat.st_mtime_ns, how, q.casefold())


@functools.lru_cache(maxsize=32)
def _search(path: str, mtime_ns: int, how: Layout, needle: str) -> frozenset[str]:
    found: set[str] = set()
    try:
        for prompt in PromptSet(path, layout=how):
            if needle in transcript(prompt.messages).casefold():
                found.add(prompt.id)
                if len(found) >= MAX_MATCHES:
                    break
    except Exception:
        return frozenset()
    return frozenset(found)
