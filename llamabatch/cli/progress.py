"""A tqdm progress bar that follows engine events."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from llamabatch.errors import RequestError

if TYPE_CHECKING:
    from tqdm import tqdm


@functools.cache
def _bar_class() -> Callable[..., tqdm[Any]]:
    """tqdm, loaded when a bar is first drawn (a quiet run never draws one)."""
    from tqdm import tqdm

    class _Bar(tqdm):  # type: ignore[type-arg]
        """A bar whose counts are read when it is drawn, so they always match its position."""

        def __init__(self, counts: Callable[[], str], **kwargs: Any) -> None:
            self._counts = counts
            super().__init__(**kwargs)

        @property
        def format_dict(self) -> MutableMapping[str, Any]:
            data = super().format_dict
            data["postfix"] = self._counts()
            return data

    return _Bar


class ProgressBar:
    """Live counts: ok, errors, retries and output tokens per second."""

    def __init__(self, *, disable: bool = False) -> None:
        self.disable = disable
        self.bar: tqdm[Any] | None = None
        self.pending: int | None = None  # what the run set out to send (None: not started)
        self.ok = 0
        self.errors = 0
        self.retries = 0
        self.tokens = 0
        self.stopped: dict[str, str] = {}  # model -> why it was stopped
        self._start = time.monotonic()
        self._batches: dict[str, str] = {}

    def on_input(self, line: str) -> None:
        """What the prompt file is, in one line (format and rows), before the bar starts."""
        if not self.disable:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)

    def on_start(self, pending: int) -> None:
        self.pending = pending
        self._start = time.monotonic()
        if pending:
            self._open(pending)  # with nothing to send, no bar (see `close`)

    def on_row(self, row: Mapping[str, Any]) -> None:
        if row["status"] == "ok":
            self.ok += 1
            self.tokens += row["completion_tokens"] or 0
        else:
            self.errors += 1
        if self.bar is None:
            if self.disable:
                return
            self._open(None)
            assert self.bar is not None
        self.bar.update(1)

    def on_batch(self, model: str, info: Mapping[str, Any]) -> None:
        """Batch mode: each model's batch states and the requests they finished."""
        states = ", ".join(f"{s} {n}" for s, n in sorted(info["states"].items())) or "collected"
        done, failed, total = (info.get(k, 0) for k in ("completed", "failed", "total"))
        self._batches[model] = f"{model}: {states} ({done}+{failed} failed/{total})"
        if self.bar is not None:
            self.bar.set_description("; ".join(self._batches.values()), refresh=True)

    def on_retry(self, model: str, error: RequestError, delay_s: float) -> None:
        self.retries += 1

    def on_model_stopped(self, model: str, error: RequestError) -> None:
        self.stopped[model] = error.error_type  # the engine's warning says why, in full
        if self.bar is not None:
            self.bar.refresh()

    def counts(self) -> str:
        """The bar's postfix: computed when the bar is drawn, from the same events as its count."""
        rate = self.tokens / max(1e-9, time.monotonic() - self._start)
        text = f"ok={self.ok}, err={self.errors}, retries={self.retries}, tok_s={rate:.0f}"
        if self.stopped:
            text += ", stopped=" + ",".join(f"{m} ({why})" for m, why in self.stopped.items())
        return text

    def _open(self, total: int | None) -> None:
        if self.disable:
            return
        self.bar = _bar_class()(self.counts, total=total, unit="req", dynamic_ncols=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
