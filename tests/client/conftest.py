"""A Python client generated from the API's own OpenAPI schema with openapi-python-client, as a
client team would make it; generated afresh in every test run, so a schema change that breaks the
client fails the suite. A warning from the generator (an operation or model it had to leave out)
fails it too."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PACKAGE = "agent_pipeline_client"


def api_schema() -> dict[str, Any]:
    """The schema exactly as /api/schema/ serves it."""
    from django.test import Client

    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory, django_db_setup: Any, django_db_blocker: Any) -> ModuleType:
    """The generated package, imported (its `api.v1` operations and `models`)."""
    work = tmp_path_factory.mktemp("client")
    with django_db_blocker.unblock():
        (work / "openapi.json").write_text(json.dumps(api_schema()))
    (work / "config.yaml").write_text(f"project_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--config", "config.yaml", "--meta", "none"]
        + ["--output-path", PACKAGE, "--fail-on-warning"],
        cwd=work, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    assert done.returncode == 0, f"the client does not generate from the schema:\n{done.stdout}\n{done.stderr}"
    sys.path.insert(0, str(work))
    try:
        package = importlib.import_module(PACKAGE)
        for name in ("tickets_create", "tickets_list", "tickets_retrieve", "tickets_replay"):
            importlib.import_module(f"{PACKAGE}.api.v1.{name}")
        importlib.import_module(f"{PACKAGE}.models")
    finally:
        sys.path.remove(str(work))
    return package
