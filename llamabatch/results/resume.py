"""Resume state: which rows an output directory already holds, and whether they still fit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa

from llamabatch.prompts.prompt import MASK64, id_hash
from llamabatch.results.parts import Parts
from llamabatch.results.schema import KEY, TURN

LOAD_BATCH_ROWS = 8_192


def key_hash(model: str, prompt_id: str, sample: int, turn: int | None = None) -> int:
    """A row's key as 64 bits: compact enough to hold millions (valid within one process).

    Without a turn it is also a whole conversation's key.
    """
    key = (model, prompt_id, sample) if turn is None else (model, prompt_id, sample, turn)
    return hash(key) & MASK64


class DoneIndex:
    """What an output directory already holds: the keys with an `ok` row, and more.

    Keys are kept as sorted 64-bit hashes (8 bytes a row), so resuming over
    millions of rows stays cheap.
    """

    def __init__(
        self,
        ok_keys: np.ndarray[Any, np.dtype[np.uint64]] | None = None,
        *,
        ok_by_model: Mapping[str, int] | None = None,
        errors: int = 0,
        identities: Mapping[str, set[tuple[str, str]]] | None = None,
        prompt_hashes: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None,
        output: Path | None = None,
    ) -> None:
        self._ok = np.sort(ok_keys) if ok_keys is not None else np.empty(0, np.uint64)
        self.ok_by_model = dict(ok_by_model or {})
        self.errors = errors
        self.identities = dict(identities or {})
        self.prompt_hashes = prompt_hashes
        self.output = output  # where stored replies of unfinished conversations are read

    def count(self, model: str | None = None) -> int:
        if model is not None:
            return self.ok_by_model.get(model, 0)
        return len(self._ok)

    def is_done(self, model: str, prompt_id: str, sample: int) -> bool:
        return bool(self.contains(np.array([key_hash(model, prompt_id, sample)], np.uint64))[0])

    def pending(
        self, model: str, prompts: list[Any], repeats: int
    ) -> Iterator[tuple[Any, int, int]]:
        """(prompt, sample, turns already stored) of a batch's work without an `ok` row.

        A conversation has work left until its last turn is `ok`; its stored
        turns are the leading `ok` ones, whose replies it goes on from.
        """
        pairs = [(p, s) for p in prompts for s in range(repeats)]
        if not len(self._ok):
            for prompt, sample in pairs:
                yield prompt, sample, 0
            return
        hashes = np.fromiter(
            (key_hash(model, p.id, s) for p, s in pairs), dtype=np.uint64, count=len(pairs)
        )
        for (prompt, sample), done in zip(pairs, self.contains(hashes), strict=True):
            if done:
                continue
            if prompt.turns is None:
                yield prompt, sample, 0
                continue
            stored = self._stored_turns(model, prompt.id, sample, len(prompt.turns))
            if stored < len(prompt.turns):
                yield prompt, sample, stored

    def _stored_turns(self, model: str, prompt_id: str, sample: int, turns: int) -> int:
        keys = (key_hash(model, prompt_id, sample, t) for t in range(1, turns + 1))
        ok = self.contains(np.fromiter(keys, dtype=np.uint64, count=turns))
        return turns if ok.all() else int(np.argmin(ok))

    def replies(
        self, model: str, stored: Mapping[tuple[str, int], int]
    ) -> dict[tuple[str, int], tuple[str, ...]]:
        """The replies of (prompt_id, sample) -> n stored turns (blocking: reads parts)."""
        if self.output is None or not stored:
            return {}
        return stored_replies(self.output, model, stored)

    def contains(self, hashes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """For each key hash, whether it has an `ok` row."""
        if not len(self._ok):
            return np.zeros(len(hashes), bool)
        at = np.searchsorted(self._ok, hashes).clip(max=len(self._ok) - 1)
        return np.asarray(self._ok[at] == hashes)


def load_done(output: Path, *, keep_errors: bool = False) -> DoneIndex:
    """Index the rows already in `output`; errored rows count as done only with `keep_errors`."""
    loader = _Loader(keep_errors)
    parts = Parts(output)
    for path in parts.paths:
        names = set(parts.schema(path).names)
        columns = [c for c in KEY if c in names] + ["status", "provider", "model_id"]
        columns += ["prompt_hash"] if "prompt_hash" in names else []
        # Batch by batch, single-threaded: memory stays small however large the parts.
        for batch in parts.batches(path, columns, LOAD_BATCH_ROWS):
            loader.add(pa.Table.from_batches([batch]))
            # Arrow's allocator keeps freed batches for reuse; over a million
            # rows that alone was ~50 MB of peak memory.
            pa.default_memory_pool().release_unused()
    return loader.index(output)


class _Loader:
    """Accumulates what stored rows say, batch by batch."""

    def __init__(self, keep_errors: bool) -> None:
        self.keep_errors = keep_errors
        self.ok_keys: list[np.ndarray[Any, Any]] = []
        self.ok_by_model: Counter[str] = Counter()
        self.identities: dict[str, set[tuple[str, str]]] = {}
        self.id_parts: list[np.ndarray[Any, Any]] = []
        self.content_parts: list[np.ndarray[Any, Any]] = []
        self.errors = 0

    def add(self, table: pa.Table) -> None:
        import pyarrow.compute as pc  # only a resumed run reads stored rows

        ok = table.filter(pc.equal(table["status"], "ok"))
        self.errors += table.num_rows - ok.num_rows
        if self.keep_errors:
            ok = table
            if TURN in table.column_names:
                # A conversation that ended in a (kept) error is done as a whole.
                failed = pc.not_equal(table["status"], "ok")
                ended = table.filter(pc.and_(pc.is_valid(table[TURN]), failed))
                self._add_keys(ended, turns=False)
        self._add_keys(ok, turns=True)
        for entry in pc.value_counts(ok["model"]).to_pylist():
            self.ok_by_model[entry["values"]] += entry["counts"]
        for row in table.group_by(["model", "provider", "model_id"]).aggregate([]).to_pylist():
            self.identities.setdefault(row["model"], set()).add((row["provider"], row["model_id"]))
        if "prompt_hash" in table.column_names:
            known = table.filter(pc.is_valid(table["prompt_hash"]))
            pairs = known.group_by(["prompt_id", "prompt_hash"]).aggregate([])
            prompt_ids = pairs["prompt_id"].to_pylist()
            self.id_parts.append(np.fromiter(map(id_hash, prompt_ids), np.uint64, len(prompt_ids)))
            self.content_parts.append(_hex64(pairs["prompt_hash"].to_pylist()))

    def _add_keys(self, rows: pa.Table, *, turns: bool) -> None:
        models, ids, samples = (rows[c].to_pylist() for c in ("model", "prompt_id", "sample"))
        if turns and TURN in rows.column_names:
            turn_of = rows[TURN].to_pylist()
        else:
            turn_of = [None] * rows.num_rows
        keys = (
            key_hash(m, p, s, t) for m, p, s, t in zip(models, ids, samples, turn_of, strict=True)
        )
        self.ok_keys.append(np.fromiter(keys, dtype=np.uint64, count=rows.num_rows))

    def index(self, output: Path | None = None) -> DoneIndex:
        prompt_hashes = None
        if self.id_parts:
            ids, contents = np.concatenate(self.id_parts), np.concatenate(self.content_parts)
            order = np.argsort(ids, kind="stable")
            prompt_hashes = (ids[order], contents[order])
        return DoneIndex(
            np.concatenate(self.ok_keys) if self.ok_keys else None,
            ok_by_model=self.ok_by_model,
            errors=self.errors,
            identities=self.identities,
            prompt_hashes=prompt_hashes,
            output=output,
        )


def stored_replies(
    output: Path, model: str, stored: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], tuple[str, ...]]:
    """The replies of the first n turns of conversations (prompt_id, sample) -> n, from parts."""
    import pyarrow.compute as pc

    texts: dict[tuple[str, int], dict[int, str]] = {}
    ids = pa.array(sorted({prompt_id for prompt_id, _ in stored}), pa.string())
    parts = Parts(output)
    for path in parts.paths:
        if TURN not in parts.schema(path).names:
            continue
        table = parts.read(path, columns=["model", "prompt_id", "sample", TURN, "status"])
        wanted = pc.and_(
            pc.and_(pc.equal(table["model"], model), pc.equal(table["status"], "ok")),
            pc.and_(pc.is_valid(table[TURN]), pc.is_in(table["prompt_id"], value_set=ids)),
        )
        rows = pc.indices_nonzero(wanted)
        if not len(rows):
            continue
        found = parts.read(path, columns=["prompt_id", "sample", TURN, "output_text"]).take(rows)
        for row in found.to_pylist():
            key = (row["prompt_id"], row["sample"])
            if row[TURN] <= stored.get(key, 0):
                texts.setdefault(key, {})[row[TURN]] = row["output_text"] or ""
    return {
        key: tuple(texts[key][t] for t in range(1, n + 1))
        for key, n in stored.items()
        if len(texts.get(key, {})) >= n
    }


MAX_LISTED = 5


def _hex64(values: list[str]) -> np.ndarray[Any, Any]:
    """16-hex-digit strings as uint64: one bytes.fromhex for all instead of int() per value."""
    return np.frombuffer(bytes.fromhex("".join(values)), ">u8").astype(np.uint64)


class ResumeScan:
    """Rides along the validation pass when resuming: finds prompts whose content changed
    under a stored id, and marks, per model, the rows that still have work to send.

    Lookups are batched and vectorised; the marks (one byte per row and model)
    let each model's reader skip finished rows without parsing them.
    """

    FLUSH = 8192

    def __init__(self, done: DoneIndex, models: Sequence[str], repeats: int) -> None:
        self.done = done
        self.models = list(models)
        self.repeats = repeats
        self.count = 0
        self.examples: list[str] = []
        self.pending: dict[str, bytearray] = {m: bytearray() for m in self.models}
        # (row, id, content hash); no hash when replaying a file whose content was checked.
        self._seen: list[tuple[int, str, str | None]] = []
        self.active = done.count() > 0 or done.prompt_hashes is not None
        # The stored prompt ids (as hashes) and whether this prompt file has each.
        self._stored_ids = (
            np.unique(done.prompt_hashes[0]) if done.prompt_hashes is not None else None
        )
        self._found = np.zeros(0 if self._stored_ids is None else len(self._stored_ids), bool)

    def __call__(self, row_no: int, prompt: Any) -> None:
        if self.active:
            self._seen.append((row_no, prompt.id, prompt.content_hash))
            if len(self._seen) >= self.FLUSH:
                self.finish()

    def replay(self, rows: Iterator[tuple[int, str]]) -> None:
        """Mark rows from stored (row, id) pairs of an unchanged, already validated file."""
        if not self.active:
            return
        for row_no, prompt_id in rows:
            self._seen.append((row_no, prompt_id, None))
            if len(self._seen) >= self.FLUSH:
                self.finish()
        self.finish()

    def finish(self) -> None:
        """Process what is buffered (call once more after the scan)."""
        seen, self._seen = self._seen, []
        if not seen:
            return
        keys = np.fromiter((id_hash(p) for _, p, _ in seen), np.uint64, len(seen))
        self._find_stored(keys)
        self._check_drift(seen, keys)
        for model in self.models:
            self._mark(model, seen)

    def only(self, model: str) -> bytearray | None:
        """The rows of `model` with work left, or None when every row may have some."""
        return self.pending[model] if self.active else None

    def unknown_ids(self) -> np.ndarray[Any, Any]:
        """Hashes of stored prompt ids this prompt file does not have (after the scan)."""
        if self._stored_ids is None:
            return np.empty(0, np.uint64)
        return self._stored_ids[~self._found]

    def _find_stored(self, keys: np.ndarray[Any, Any]) -> None:
        stored = self._stored_ids
        if stored is None or not len(stored):
            return
        at = np.searchsorted(stored, keys).clip(max=len(stored) - 1)
        self._found[at[stored[at] == keys]] = True

    def _check_drift(
        self, seen: list[tuple[int, str, str | None]], keys: np.ndarray[Any, Any]
    ) -> None:
        stored = self.done.prompt_hashes
        if stored is None or seen[0][2] is None:
            return
        ids, contents = stored
        # 16 hex digits each: one bytes.fromhex over all is far cheaper than int() per row.
        mine = _hex64([h for _, _, h in seen if h is not None])
        at = np.searchsorted(ids, keys).clip(max=len(ids) - 1)
        changed = np.flatnonzero((ids[at] == keys) & (contents[at] != mine))
        self.count += len(changed)
        for i in changed[: MAX_LISTED - len(self.examples)].tolist():
            self.examples.append(seen[i][1])

    def _mark(self, model: str, seen: list[tuple[int, str, str | None]]) -> None:
        marks = self.pending[model]
        keys = np.fromiter(
            (key_hash(model, p, s) for _, p, _ in seen for s in range(self.repeats)),
            np.uint64,
            len(seen) * self.repeats,
        )
        finished = self.done.contains(keys).reshape(len(seen), self.repeats).all(axis=1)
        done = cast(list[bool], finished.tolist())
        last = seen[-1][0]
        if len(marks) <= last:
            marks.extend(bytes(last + 1 - len(marks)))
        for (row_no, _, _), is_done in zip(seen, done, strict=True):
            marks[row_no] = 0 if is_done else 1


def stored_prompt_ids(output: Path, hashes: np.ndarray[Any, Any], most: int) -> list[str]:
    """Up to `most` stored prompt ids whose hash is in `hashes`, to name them (blocking)."""
    wanted = {int(h) for h in hashes}
    found: list[str] = []
    parts = Parts(output)
    for path in parts.paths:
        table = parts.read(path, columns=["prompt_id"])
        for prompt_id in table["prompt_id"].unique().to_pylist():
            if id_hash(prompt_id) in wanted and prompt_id not in found:
                found.append(prompt_id)
                if len(found) >= most:
                    return sorted(found)
    return sorted(found)
