"""A tqdm progress bar that follows engine events."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

from llamabatch.errors import RequestError

POSTFIX_INTERVAL_S = 0.5


class ProgressBar:
    """Live counts: ok, errors, retries and output tokens per second."""

    def __init__(self, *, disable: bool = False) -> None:
        self.disable = disable
        self.bar: tqdm[Any] | None = None
        self.ok = 0
        self.errors = 0
        self.retries = 0
        self.tokens = 0
        self.stopped: dict[str, str] = {}  # model -> why it was stopped
        self._start = time.monotonic()
        self._shown = 0.0
        self._batches: dict[str, str] = {}

    def on_input(self, line: str) -> None:
        """What the prompt file is, in one line (format and rows), before the bar starts."""
        if not self.disable:
            tqdm.write(line, file=sys.stderr)

    def on_start(self, pending: int) -> None:
        self.bar = tqdm(total=pending, unit="req", dynamic_ncols=True, disable=self.disable)

    def on_row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self.ok += 1
            self.tokens += row["completion_tokens"] or 0
        else:
            self.errors += 1
        if self.bar is not None:
            self.bar.update(1)
        self._postfix()

    def on_batch(self, model: str, info: Mapping[str, Any]) -> None:
        """Batch mode: each model's batch states and the requests they finished."""
        states = ", ".join(f"{s} {n}" for s, n in sorted(info["states"].items())) or "collected"
        done, failed, total = (info.get(k, 0) for k in ("completed", "failed", "total"))
        self._batches[model] = f"{model}: {states} ({done}+{failed} failed/{total})"
        if self.bar is not None:
            self.bar.set_description("; ".join(self._batches.values()), refresh=True)

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        self.retries += 1
        self._postfix()

    def on_model_stopped(self, model: str, error: RequestError) -> None:
        self.stopped[model] = error.error_type  # the engine's warning says why, in full
        self._shown = 0.0
        self._postfix()

    def _postfix(self) -> None:
        now = time.monotonic()
        if self.bar is None or now - self._shown < POSTFIX_INTERVAL_S:
            return
        self._shown = now
        rate = self.tokens / max(1e-9, now - self._start)
        postfix: dict[str, object] = {
            "ok": self.ok,
            "err": self.errors,
            "retries": self.retries,
            "tok_s": f"{rate:.0f}",
        }
        if self.stopped:
            postfix["stopped"] = ",".join(f"{m} ({why})" for m, why in self.stopped.items())
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self._shown = 0.0
        self._postfix()
        if self.bar is not None:
            self.bar.close()
