"""The layout rule: no module imports upward, none is over 600 lines.

measure <- stages <- pipeline <- cli; le1 (the file format) under all of them; sources,
store and present at the edges (they may use le1 and measure, never stages, pipeline or
the CLI). `viskom.store.atomic`, the one atomic-write helper, is a leaf anyone may use.
Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "viskom"
MAX_LINES = 600

#: Which packages a package may import (besides itself and the standard library).
ALLOWED: dict[str, set[str]] = {
    "le1": set(),
    "metrics": set(),
    "measure": {"le1"},
    "config": {"measure", "metrics"},  # bands name registered metrics
    "store": set(),
    "present": {"le1", "measure"},
    "sources": {"le1", "measure", "store"},
    "stages": {"le1", "measure", "metrics", "present", "store"},
    "pipeline": {"le1", "measure", "metrics", "stages", "sources", "store", "present", "config"},
    "demo": {"sources", "config"},
    "cli": {"le1", "measure", "metrics", "stages", "sources", "store", "present", "config"}
    | {"pipeline", "demo"},
    "__init__": set(),
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The viskom packages a module imports (top level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:3] == ["viskom", "store", "atomic"]:
                found.add("store.atomic")  # the one atomic-write helper: a leaf, for all
            elif parts[0] == "viskom" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "viskom":
                found.add("__init__")
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def test_every_package_has_a_rule() -> None:
    assert {_package(p) for p in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_import(path: Path) -> None:
    package = _package(path)
    wrong = _imports(path) - ALLOWED[package] - {package, "__init__", "store.atomic"}
    assert not wrong, f"{path.relative_to(SRC)} ({package}) imports {sorted(wrong)}"


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in MODULES
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_stages_do_no_io() -> None:
    """A stage gets its inputs handed in: no file reading or writing, no database, network
    or subprocess in stages/ (the runner, `pipeline.stage_io`, does that)."""
    banned = ("read_table", "write_table", "write_json", "write_arrays", "write_figure",
              "subprocess", "requests", "urllib", "Store", "open(", ".read_text(",
              ".write_text(", ".unlink(", "Le1Frame(", "ProcessPoolExecutor")  # fmt: skip
    offenders = []
    for path in sorted((SRC / "stages").glob("*.py")):
        text = path.read_text()
        offenders += [f"{path.name}: {b}" for b in banned if b in text]
    assert not offenders, offenders


#: Blocks written once, in one place: (text, the only module allowed to contain it, why).
ONE_PLACE = [
    ("os.replace(", "store/atomic.py", "atomic writes go through viskom.store.atomic"),
    ("mkstemp(", "store/atomic.py", "atomic writes go through viskom.store.atomic"),
    ("1.4826", "measure/robust.py", "robust sigma: measure.robust.MAD_TO_SIGMA / mad_sigma"),
    ("time.sleep(", "sources/http.py", "retries and backoff: the one HTTP session"),
]


def _code(path: Path) -> str:
    """A module's code without its comments and strings (docstrings may name a constant)."""
    import io
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    skip = (tokenize.COMMENT, tokenize.STRING)
    return "".join(t.string for t in tokens if t.type not in skip)


@pytest.mark.parametrize(("text", "home", "why"), ONE_PLACE, ids=[t for t, _, _ in ONE_PLACE])
def test_no_copied_block(text: str, home: str, why: str) -> None:
    found = [str(p.relative_to(SRC)) for p in MODULES if text in _code(p)]
    assert set(found) <= {home}, f"{text!r} outside {home} ({why}): {found}"
