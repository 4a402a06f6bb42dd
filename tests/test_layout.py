"""The architecture holds: no import cycles, modules of a readable size, layers enforced."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "llamabatch"
MAX_LINES = 450
PACKAGES = ("config", "prompts", "sim", "wire", "results", "engine", "scoring", "report", "cli")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_among_modules() -> None:
    graph = grimp.build_graph("llamabatch")  # imports under TYPE_CHECKING count too
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "b", "c"):
        graph.add_module(module)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph) == [["a", "b"]]


def test_modules_stay_readable() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_named_packages_exist_and_little_is_left_at_the_top() -> None:
    for name in PACKAGES:
        assert (PACKAGE / name / "__init__.py").is_file(), name
        assert (ROOT / "tests" / name).is_dir(), f"tests/{name} mirrors llamabatch/{name}"
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 8, top
    assert not (PACKAGE / "providers").exists()


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("wire/sse.py", "from llamabatch.engine import Engine", "nothing of the engine"),
        ("sim/plan.py", "from llamabatch.config import ModelConfig", "nothing of the client"),
        ("results/schema.py", "from llamabatch.report import compare", "without the engine"),
        ("engine/lane.py", "import pandas", "no progress bars, data frames"),
    ],
)
def test_a_backwards_import_breaks_the_build(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    shutil.copytree(PACKAGE, tmp_path / "llamabatch")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "llamabatch" / module).open("a") as fh:
        fh.write(f"\n{bad_import}  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    kept = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    broken = subprocess.run(
        [str(lint)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert kept.returncode == 0, kept.stdout
    assert broken.returncode != 0
    assert contract in broken.stdout.split("Broken contracts")[1]
