#!/usr/bin/env python
"""Measure the rules tier of an intent pack against a labelled CSV.

Usage (from the repository root):

    .venv/bin/python tooling/research/measure_rules.py \
        [--pack agents/packs/banking77.yaml] \
        [--data agents/data/banking77/train.csv] \
        [--errors INTENT|all] [--misses INTENT]

Prints, per intent: support, hits (rows matched by that intent's rules),
precision and recall; then overall:

* coverage  = share of rows matched by the rules of exactly one intent
* precision = share of those rows whose label is that intent
* conflicts = rows matched by more than one intent (the rules tier abstains)

Text is normalised exactly as the runtime does: unicode NFKC, whitespace
collapsed, lower-cased; regexes are compiled with re.IGNORECASE.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PACK = REPO / "agents" / "packs" / "banking77.yaml"
DEFAULT_DATA = REPO / "agents" / "data" / "banking77" / "train.csv"

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC, collapse whitespace, strip, lower-case."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def load_pack(path: Path | str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def compile_rules(pack: dict) -> dict[str, re.Pattern]:
    """One pattern per intent with rules, joined exactly as the runtime rules tier does."""
    compiled = {}
    for intent in pack["intents"]:
        rules = intent.get("rules") or []
        if rules:
            compiled[intent["name"]] = re.compile("|".join(f"(?:{r})" for r in rules), re.IGNORECASE)
    return compiled


def load_rows(path: Path | str) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def match(rules: dict[str, re.Pattern], text: str) -> list[str]:
    """Names of the intents whose rules match the (raw) text."""
    norm = normalise(text)
    return [name for name, pattern in rules.items() if pattern.search(norm)]


@dataclass
class Report:
    total: int = 0
    support: dict = field(default_factory=dict)
    hits: dict = field(default_factory=dict)  # rows matched by the intent's rules
    correct: dict = field(default_factory=dict)  # ... whose label is that intent
    single: int = 0  # rows matched by exactly one intent
    single_correct: int = 0
    conflicts: int = 0
    errors: list = field(default_factory=list)  # (predicted, label, text) false positives
    matched_rows: list = field(default_factory=list)  # (labels matched, label, text)

    def precision(self, name: str) -> float | None:
        h = self.hits.get(name, 0)
        return self.correct.get(name, 0) / h if h else None

    def recall(self, name: str) -> float:
        s = self.support.get(name, 0)
        return self.correct.get(name, 0) / s if s else 0.0

    @property
    def coverage(self) -> float:
        return self.single / self.total if self.total else 0.0

    @property
    def overall_precision(self) -> float:
        return self.single_correct / self.single if self.single else 0.0


def measure(pack: dict, rows: list[tuple[str, str]]) -> Report:
    rules = compile_rules(pack)
    rep = Report(total=len(rows))
    for intent in pack["intents"]:
        name = intent["name"]
        rep.support[name] = rep.hits[name] = rep.correct[name] = 0
    for text, label in rows:
        rep.support[label] = rep.support.get(label, 0) + 1
        got = match(rules, text)
        rep.matched_rows.append((got, label, text))
        for name in got:
            rep.hits[name] += 1
            if name == label:
                rep.correct[name] += 1
            else:
                rep.errors.append((name, label, text))
        if len(got) == 1:
            rep.single += 1
            rep.single_correct += got[0] == label
        elif len(got) > 1:
            rep.conflicts += 1
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default=str(DEFAULT_PACK))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--errors", metavar="INTENT", help="print false positives of INTENT ('all' for every intent)")
    ap.add_argument("--misses", metavar="INTENT", help="print rows of INTENT that its rules do not match")
    ap.add_argument("--per-rule", action="store_true", help="also print hits and precision of every single rule")
    ap.add_argument(
        "--min-precision",
        type=float,
        default=0.97,
        help="flag intents whose rule precision is below this (default 0.97)",
    )
    args = ap.parse_args(argv)

    pack = load_pack(args.pack)
    rows = load_rows(args.data)
    rep = measure(pack, rows)

    print(f"{'intent':52} {'supp':>5} {'rules':>5} {'hits':>5} {'prec':>7} {'recall':>7}")
    flagged = []
    n_rules = 0
    for intent in pack["intents"]:
        name = intent["name"]
        k = len(intent.get("rules") or [])
        n_rules += k
        p = rep.precision(name)
        flag = ""
        if k and (p is None or p < args.min_precision):
            flag = "  <-- below target"
            flagged.append(name)
        ps = f"{p:7.1%}" if p is not None else "      -"
        print(f"{name:52} {rep.support.get(name, 0):5} {k:5} {rep.hits[name]:5} {ps} {rep.recall(name):7.1%}{flag}")
    with_rules = sum(1 for i in pack["intents"] if i.get("rules"))
    print()
    print(f"rows: {rep.total}   intents with rules: {with_rules}/{len(pack['intents'])}   rules: {n_rules}")
    print(f"coverage (matched by exactly one intent): {rep.single}/{rep.total} = {rep.coverage:.1%}")
    print(f"precision of those: {rep.single_correct}/{rep.single} = {rep.overall_precision:.2%}")
    print(f"conflicts (matched by >1 intent, abstain): {rep.conflicts}")
    if flagged:
        print(f"intents below {args.min_precision:.0%} precision: {', '.join(flagged)}")

    if args.per_rule:
        print("\nper rule (intent #index: hits, precision)")
        normed = [(normalise(t), label) for t, label in rows]
        for intent in pack["intents"]:
            for k, rx in enumerate(intent.get("rules") or []):
                pat = re.compile(rx, re.IGNORECASE)
                labels = [label for t, label in normed if pat.search(t)]
                ok = sum(1 for label in labels if label == intent["name"])
                prec = f"{ok / len(labels):7.1%}" if labels else "      -"
                print(f"  {intent['name']} #{k}: {len(labels):4} {prec}   {rx}")

    if args.errors:
        print("\nfalse positives (predicted <- label: text)")
        for name, label, text in rep.errors:
            if args.errors in ("all", name):
                print(f"  {name} <- {label}: {text}")
    if args.misses:
        print(f"\nrows of {args.misses} not matched by its rules")
        for got, label, text in rep.matched_rows:
            if label == args.misses and args.misses not in got:
                print(f"  [{','.join(got)}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
