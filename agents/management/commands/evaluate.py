"""`manage.py evaluate --data FILE.csv [--system] [--json]`: the active model, or the whole local
decision (rules, the model's cascade, decide's policy, the thresholds in the database), on labelled data."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.intents.blobs import BlobRefused
from agents.intents.catalog import get_catalog
from agents.intents.learning import model_active
from agents.intents.localmodel.data import load_csv
from agents.intents.training.evaluate import evaluate, format_report
from agents.intents.training.system import score_system, summarise
from agents.models import Intent


class Command(BaseCommand):
    help = "Accuracy, automated share and its precision: of the model (per intent, confusions) or, with --system, of the whole local decision."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", required=True, help="A CSV with columns text,category.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")
        parser.add_argument(
            "--system", action="store_true", help="Score parse → classify (rules, local model) → decide, as deployed."
        )

    def handle(self, *args: Any, data: str, json: bool, system: bool, **options: Any) -> None:
        try:
            active = model_active()
        except BlobRefused as exc:
            raise CommandError(str(exc)) from exc
        if active is None:
            raise CommandError("no active local model: run `manage.py retrain` first")
        version, model = active
        try:
            texts, labels = load_csv(data)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if system:
            self.stdout.write(_dumps(_system_report(version.version, model, texts, labels)))
            return
        # The thresholds in force are the database's (reviewers move them), not only the model's.
        model.thresholds = {**model.thresholds, **dict(Intent.objects.values_list("name", "threshold"))}
        report = evaluate(model, texts, labels)
        report["model_version"] = version.version
        if json:
            self.stdout.write(_dumps(report))
        else:
            self.stdout.write(f"Model {version.version} on {data} ({len(texts)} rows)\n")
            self.stdout.write(format_report(report))


def _system_report(version: str, model: Any, texts: list[str], labels: list[str]) -> dict[str, Any]:
    """One JSON object: accuracy, automated_share, automated_precision, and each tier's part."""
    rows = score_system(texts, labels, get_catalog(), model, tag=version)
    summary = summarise(rows)
    keys = ("n", "accuracy", "automated_share", "automated_precision", "encoded_share", "cpu_ms_mean", "cpu_ms_p99")
    report = {k: summary[k] for k in keys}
    parts = ("system_by_rules", "system_by_model", "system_by_encoder", "model_alone")
    report.update({k: summary[k] for k in parts}, escalations=summary["escalations"], model_version=version)
    return report


def _dumps(report: dict[str, Any]) -> str:
    return jsonlib.dumps(report, indent=2, default=float)
