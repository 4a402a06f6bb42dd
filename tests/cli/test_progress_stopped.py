"""The progress bar says which model was stopped, and why."""

from __future__ import annotations

from llamabatch.cli.progress import ProgressBar
from llamabatch.errors import RequestError


def test_the_bar_names_a_stopped_model_and_why() -> None:
    bar = ProgressBar()
    bar.on_start(3)
    bar.on_row({"status": "ok", "completion_tokens": 5})
    bar.on_model_stopped("bad", RequestError("auth", "HTTP 401: Incorrect API key provided."))
    shown = str(bar.bar)
    bar.close()
    assert "1/3" in shown and "stopped=bad (auth)" in shown and "ok=1" in shown
