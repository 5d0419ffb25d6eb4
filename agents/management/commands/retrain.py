"""`manage.py retrain`: train the local model on base data + reviewers' decisions; activate it if not worse."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from agents.intents.learning import model_retrain, model_rollback
from agents.models import ModelVersion


class Command(BaseCommand):
    help = "Retrain the local intent model (with a progress bar); activate it only if it is not worse."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Only when no model is active (first run): the quick first recipe, then the full one is queued "
            "for the maintenance worker.",
        )
        parser.add_argument(
            "--full", action="store_true", help="With --if-missing: the full recipe now, nothing queued."
        )
        parser.add_argument("--force", action="store_true", help="Activate even if worse on the holdout.")
        parser.add_argument("--rollback", action="store_true", help="Re-activate the previous version instead.")

    def handle(self, *args: Any, if_missing: bool, full: bool, force: bool, rollback: bool, **options: Any) -> None:
        if rollback:
            previous = model_rollback()
            self.stdout.write(f"Rolled back to {previous.version}." if previous else "Nothing to roll back to.")
            return
        if if_missing and ModelVersion.objects.filter(is_active=True).exists():
            self.stdout.write("A local model is active already; nothing to do.")
            return
        bars: dict[str, tqdm] = {}

        def progress(step: str, done: int, total: int) -> None:
            bar = bars.get(step)
            if bar is None:
                bar = bars[step] = tqdm(total=total, desc=step, unit="step", file=self.stderr._out)
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()

        started = time.monotonic()
        first = if_missing and not full
        version, activated, why = model_retrain(progress=progress, force=force, first=first)
        for bar in bars.values():
            bar.close()
        m = version.metrics
        self.stdout.write(
            f"Model {version.version}: {version.n_examples} examples ({version.n_feedback} from reviewers); "
            f"CV accuracy {m.get('accuracy', 0):.4f}, macro-F1 {m.get('macro_f1', 0):.4f}, "
            f"automated {m.get('automated_share', 0):.1%} at precision {m.get('automated_precision', 0):.2%}; "
            f"trained in {time.monotonic() - started:.0f} s."
        )
        self.stdout.write(("Activated: " if activated else "Not activated: ") + why)
        if first:
            self.stdout.write(self._queue_full_recipe())

    @staticmethod
    def _queue_full_recipe() -> str:
        """The first model is the quick recipe: queue the full one (`agents.retrain_local_model`)."""
        from agents.tasks import retrain_local_model

        try:
            retrain_local_model.apply_async(retry=False)
        except Exception as exc:  # no broker yet: the beat task retrains within its period anyway
            return f"The full recipe was not queued ({type(exc).__name__}); the retrain beat task will train it."
        return "The full recipe is queued for the maintenance worker (agents.retrain_local_model)."
