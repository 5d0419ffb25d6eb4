"""The shape the code keeps (docs/architecture.md): the import contracts (.importlinter), no import cycle
among the product's modules, the product never imports the tooling or the tests, and no product file
grows past ~400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

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


def test_the_import_contracts_hold():
    """.importlinter: the apps in one direction, the API views on top, no cycles between siblings,
    the tooling apart. Imports inside functions count."""
    run = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout, run.stdout


def test_no_module_of_the_product_imports_itself_in_a_circle():
    """Module by module, imports inside functions and under TYPE_CHECKING included."""
    graph = grimp.build_graph(*PRODUCT, cache_dir=None)
    cycles = [
        (module, other)
        for module in graph.modules
        for other in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=other, imported=module)
    ]
    assert not cycles, cycles


def test_the_product_never_imports_the_tests():
    offenders = {
        module_of(p): sorted(m for m in imports_at_load(p) if m.split(".")[0] in ("tests", "bench"))
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
