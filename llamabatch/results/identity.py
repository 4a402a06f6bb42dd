"""Whether a directory's stored rows belong with this config's: same models, same prompts.

A resumed run may only add rows that can be compared with those already
there. The checks below name what differs; the caller refuses (exit 2, nothing
sent) unless told otherwise (`--force`, or `--add-models` for new models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamabatch.results.resume import MAX_LISTED, DoneIndex, ResumeScan, stored_prompt_ids


def fingerprint(defaults: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """What must stay the same for a model's old rows to be comparable with new ones."""
    if model.get("task") == "embed":
        defaults = {}  # an embedding model takes only its own params
    return {
        "provider": model["provider"],
        "model": model["model"],
        "stream": model.get("stream", True),
        "params": {**defaults, **model.get("params", {})},
    }


def incompatibilities(
    snapshot: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    done: DoneIndex,
    drift: ResumeScan,
) -> list[str]:
    """Reasons the existing rows cannot be mixed with this config's (empty when they can)."""
    problems = []
    old_models = {}
    if previous is not None:
        old_config = previous.get("config", {})
        old_models = {
            m["name"]: fingerprint(old_config.get("defaults", {}), m)
            for m in old_config.get("models", [])
        }
    for model in snapshot["models"]:
        name = model["name"]
        has_rows = name in done.identities
        for provider, model_id in sorted(done.identities.get(name, ())):
            if (provider, model_id) != (model["provider"], model["model"]):
                now = f"{model['provider']}:{model['model']}"
                problems.append(f"model {name!r} was {provider}:{model_id}, now {now}")
        new = fingerprint(snapshot.get("defaults", {}), model)
        old = old_models.get(name)
        if has_rows and old is not None and old["params"] != new["params"]:
            problems.append(
                f"model {name!r} request parameters changed: {old['params']} -> {new['params']}"
            )
        if has_rows and old is not None and old["stream"] != new["stream"]:
            problems.append(f"model {name!r} stream changed to {new['stream']}")
    if drift.count:
        problems.append(
            f"prompt content changed under existing ids: {_listed(drift.examples, drift.count)}"
        )
    return problems


def other_prompts(
    output: Path, input_path: Path, previous: Mapping[str, Any] | None, drift: ResumeScan
) -> str | None:
    """A problem when stored rows answer prompts this prompt file does not have (blocking)."""
    unknown = drift.unknown_ids()
    if not len(unknown):
        return None
    examples = stored_prompt_ids(output, unknown, MAX_LISTED)
    where = ""
    old_input = ((previous or {}).get("input") or {}).get("path")
    if old_input and Path(old_input) != input_path:
        where = f", from {old_input}"
    return (
        f"it holds rows of {len(unknown)} prompt(s) that {input_path} does not have "
        f"({_listed(examples, len(unknown))}{where}): another prompt set"
    )


def model_list_changes(
    models: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    done: DoneIndex,
) -> tuple[list[str], list[str]]:
    """(problems, added) for this config's whole model list against the directory's.

    A model with rows here that the config no longer has is a problem (its
    rows would be left behind unnoticed; a renamed model is named as such);
    a model new to a directory that holds rows is returned in `added`.
    """
    if not done.identities:
        return [], []
    names = [m["name"] for m in models]
    known = set(done.identities) | set(_manifest_models(previous))
    added = [name for name in names if name not in known]
    problems = []
    for gone in sorted(set(done.identities) - set(names)):
        renamed = [
            m["name"]
            for m in models
            if m["name"] in added and (m["provider"], m["model"]) in done.identities[gone]
        ]
        if renamed:
            problems.append(
                f"model {gone!r} is now named {renamed[0]!r} (same endpoint model): renamed, "
                f"its rows would be left behind under the old name; rename it back"
            )
            added.remove(renamed[0])
        else:
            problems.append(f"it holds rows of model {gone!r}, which this config does not have")
    return problems, added


def _manifest_models(previous: Mapping[str, Any] | None) -> list[str]:
    """The models of the run that wrote the manifest (its whole list where recorded)."""
    if not previous:
        return []
    if isinstance(previous.get("models"), list):
        return [str(name) for name in previous["models"]]
    return [m["name"] for m in (previous.get("config") or {}).get("models", [])]


def _listed(examples: Sequence[str], count: int) -> str:
    more = f" and {count - len(examples)} more" if count > len(examples) else ""
    return ", ".join(examples) + more
