"""The Celery app: configuration lives in `celeryconfig.py` at the top level."""

from __future__ import annotations

import os

from celery import Celery

from project import kombu_fixes
from project.heartbeat import WorkerHeartbeat

kombu_fixes.apply()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("celeryconfig")
app.steps["consumer"].add(WorkerHeartbeat)  # liveness file and registry (project/heartbeat.py)
app.autodiscover_tasks()
