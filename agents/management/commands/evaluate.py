"""`manage.py evaluate --data FILE.csv [--json]`: the active model and thresholds on labelled data."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.learning import model_active
from agents.localmodel.data import load_csv
from agents.localmodel.evaluate import evaluate, format_report
from agents.models import Intent


class Command(BaseCommand):
    help = "Accuracy, macro-F1, automated share and its precision, per intent, most confused pairs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", required=True, help="A CSV with columns text,category.")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, data: str, json: bool, **options: Any) -> None:
        active = model_active()
        if active is None:
            raise CommandError("no active local model: run `manage.py retrain` first")
        version, model = active
        try:
            texts, labels = load_csv(data)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        # The thresholds in force are the database's (reviewers move them), not only the model's.
        model.thresholds = {**model.thresholds, **dict(Intent.objects.values_list("name", "threshold"))}
        report = evaluate(model, texts, labels)
        report["model_version"] = version.version
        if json:
            self.stdout.write(_dumps(report))
        else:
            self.stdout.write(f"Model {version.version} on {data} ({len(texts)} rows)\n")
            self.stdout.write(format_report(report))


def _dumps(report: dict[str, Any]) -> str:
    return jsonlib.dumps(report, indent=2, default=float)
