"""docs/architecture.md lists the request path file by file with real line counts: the tables between its
`request-path` markers are the ones `python -m tooling.request_path` prints today."""

from __future__ import annotations

from tooling import request_path
from tooling.request_path import AROUND, DOC, PATH, ROOT, TIERS

LAYER_OF_APP = {
    "tickets/api": "API",
    "tickets/urls.py": "API",
    "tickets": "tickets",
    "agents": "agents",
    "project": "project",
}


def layer_of(path: str) -> str:
    return next(layer for prefix, layer in LAYER_OF_APP.items() if path.startswith(prefix))


def test_every_file_listed_exists():
    missing = [hop.path for hop in (*PATH, *TIERS, *AROUND) if hop.path and not (ROOT / hop.path).exists()]
    assert not missing, missing


def test_each_hop_names_the_layer_its_file_is_in():
    wrong = {hop.path: hop.layer for hop in (*PATH, *TIERS, *AROUND) if hop.path and layer_of(hop.path) != hop.layer}
    assert not wrong, wrong


def test_the_classifier_package_is_listed_whole():
    listed = {hop.path for hop in (*TIERS, *AROUND)}
    package = ROOT / "agents" / "intents"
    modules = {
        f"{p.relative_to(ROOT)}{'/' if p.is_dir() else ''}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    }
    assert modules - listed == {"agents/intents/packs.py"}  # loaded by a command, not on the request path


def test_the_doc_holds_todays_tables_and_line_counts():
    documented = request_path.documented(DOC.read_text())
    assert documented == request_path.render(), "stale: run `python -m tooling.request_path --write`"
