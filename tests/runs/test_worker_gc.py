"""Worker processes run the engine with the garbage-collection settings of a one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import llamabatch
from llamabatch.runs.gcsetting import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL_S
from tests.helpers import prompt_rows, write_jsonl

# Each process of the run notes, as it exits, its young-generation threshold and how
# many objects it froze (gc.freeze) — the settings the CLI gives its own process.
_NOTE_GC = """
import atexit, gc, json, os, sys

def _note() -> None:
    path = os.path.join(os.environ["GC_NOTES"], str(os.getpid()))
    with open(path, "w") as fh:
        young, frozen = gc.get_threshold()[0], gc.get_freeze_count()
        switch = sys.getswitchinterval()
        json.dump({"argv": sys.argv, "young": young, "frozen": frozen, "switch": switch}, fh)

atexit.register(_note)
"""


def test_worker_processes_collect_garbage_like_the_run_process(tmp_path: Path) -> None:
    site, notes = tmp_path / "site", tmp_path / "notes"
    site.mkdir()
    notes.mkdir()
    (site / "sitecustomize.py").write_text(_NOTE_GC)
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(8))
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n[engine]\nworkers = 2\n'
        '[[models]]\nname = "m"\nprovider = "sim"\nsim = { ttft_s = 0.0, tokens_per_s = 0.0 }\n'
    )
    root = Path(llamabatch.__file__).parents[1]  # this checkout's llamabatch, in the workers too
    path = os.pathsep.join(str(p) for p in (site, root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "GC_NOTES": str(notes)}
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = [json.loads(p.read_text()) for p in notes.iterdir()]
    workers = [s for s in seen if any("workerproc" in a for a in s["argv"])]
    assert len(workers) == 2, seen
    for worker in workers:
        assert worker["young"] >= GC_YOUNG_THRESHOLD and worker["frozen"] > 0, worker
        assert worker["switch"] == SWITCH_INTERVAL_S, worker
