"""Prompt sets: read JSON, Parquet or CSV as a stream in any known dataset format (ShareGPT,
OpenAI Batch, Alpaca, prompt rows), validate every row, derive stable ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamabatch._lazy import lazy_exports

if TYPE_CHECKING:
    from llamabatch.prompts.formats import Layout
    from llamabatch.prompts.prompt import Prompt
    from llamabatch.prompts.promptset import PromptSet, ScanReport

__getattr__ = lazy_exports(
    __name__,
    {
        "Layout": "llamabatch.prompts.formats",
        "Prompt": "llamabatch.prompts.prompt",
        "PromptSet": "llamabatch.prompts.promptset",
        "ScanReport": "llamabatch.prompts.promptset",
    },
)
__all__ = ["Layout", "Prompt", "PromptSet", "ScanReport"]
