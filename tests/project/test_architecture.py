"""The shape the code keeps (docs/architecture.md): no import cycle among the product's modules, the
product never imports the tooling or the tests, and no product file grows past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agents", "tickets", "reviews", "project")
MAX_LINES = 400


def product_files() -> list[Path]:
    files = [p for app in PRODUCT for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]
    return [*files, ROOT / "celeryconfig.py"]


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_load(path: Path) -> set[str]:
    """Modules imported when `path` is loaded: top-level statements only (not inside functions),
    `if TYPE_CHECKING:` blocks left out."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.Import):
                names |= {alias.name for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                names.add(sub.module)
                names |= {f"{sub.module}.{alias.name}" for alias in sub.names}
    return names


def graph() -> dict[str, set[str]]:
    modules = {module_of(p): p for p in product_files()}
    # A module's own parent packages are loaded before it by Python itself: not an edge.
    return {
        name: {m for m in imports_at_load(path) if m in modules and m != name and not name.startswith(m + ".")}
        for name, path in modules.items()
    }


def test_no_module_of_the_product_imports_itself_in_a_circle():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_product_never_imports_the_tooling_or_the_tests():
    offenders = {
        module_of(p): sorted(m for m in imports_at_load(p) if m.split(".")[0] in ("tooling", "tests", "bench"))
        for p in product_files()
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_product_file_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in product_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_tooling_never_imports_the_tests():
    files = list((ROOT / "tooling").rglob("*.py"))
    offenders = {module_of(p): sorted(m for m in imports_at_load(p) if m.split(".")[0] == "tests") for p in files}
    assert not {k: v for k, v in offenders.items() if v}
