"""Model blobs signed (agents/intents/blobs.py): a changed or unsigned blob is refused before pickle sees
it, the local tier abstains (the tiers below answer) and says so; `model_blobs_sign` signs the blobs of
before the upgrade, once; and a blob made before the classifier moved to agents/intents still loads."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from prometheus_client import REGISTRY
from sklearn.feature_extraction.text import TfidfVectorizer

from agents.intents import blobs
from agents.intents.local import LocalModelTier
from agents.intents.localmodel.model import IntentModel
from agents.models import ModelVersion

ROOT = Path(__file__).resolve().parents[3]
OLD_HEAD = "58fa74c"  # before the classifier moved: agents/localmodel/, training inside it
EXAMPLES = {
    "card_arrival": ["my card has not arrived", "where is my new card", "card still not here"],
    "exchange_rate": ["what is the exchange rate", "rate for euros to dollars", "how much is a euro"],
}


def tiny_model() -> IntentModel:
    """A real IntentModel without training: tf-idf fitted on a few texts, one centroid per intent."""
    texts = [t for ts in EXAMPLES.values() for t in ts]
    vectorizer = TfidfVectorizer(sublinear_tf=True, dtype=np.float32).fit(texts)
    coef = np.vstack([np.asarray(vectorizer.transform(ts).mean(axis=0)).ravel() * 10 for ts in EXAMPLES.values()])
    return IntentModel(
        vectorizer=vectorizer,
        coef=coef,
        intercept=np.zeros(len(EXAMPLES)),
        intents=list(EXAMPLES),
        temperature=1.0,
        global_threshold=0.5,
    )


class Boom:
    """What an attacker with write access to the table would store: unpickling it runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("pipeline_model_blobs_refused_total", {"reason": reason}) or 0.0


def activate(version: str, blob: bytes) -> ModelVersion:
    ModelVersion.objects.filter(is_active=True).update(is_active=False)
    return ModelVersion.objects.create(version=version, n_examples=6, blob=blob, is_active=True)


@pytest.mark.parametrize("form", ["unsigned", "signature_of_another_blob"])
def test_a_tampered_blob_is_refused_and_never_unpickled(db, tmp_path, caplog, form):
    good = blobs.blob_sign(tiny_model().to_bytes())
    marker = tmp_path / "marker"
    evil = zlib.compress(pickle.dumps({"format": 2, "x": Boom(marker)}))
    # Either the attacker's bytes alone, or behind the signature of a model the learning loop stored.
    blob = evil if form == "unsigned" else good[: len(blobs.MAGIC) + blobs.DIGEST_SIZE] + evil
    reason = "unsigned" if form == "unsigned" else "bad_signature"
    before = refused(reason)
    activate("evil", blob)

    answer = LocalModelTier().classify("my card has not arrived", {})

    assert not marker.exists(), "the blob was unpickled"
    assert answer is None  # the local tier abstains: the tiers below answer
    assert refused(reason) == before + 1
    assert "local model evil" in caplog.text and "keeping none" in caplog.text
    with pytest.raises(blobs.BlobRefused):
        blobs.model_load(blob)
    assert not marker.exists()


def test_a_refused_version_leaves_the_verified_model_in_place(db):
    tier = LocalModelTier()
    activate("good", blobs.blob_sign(tiny_model().to_bytes()))
    assert tier.classify("my card has not arrived", {}).model == "local:good"
    data = tiny_model().to_bytes()
    activate("changed", blobs.blob_sign(data)[:-1] + bytes([data[-1] ^ 1]))
    tier._checked = float("-inf")

    assert tier.classify("my card has not arrived", {}).model == "local:good"


def test_a_signed_blob_loads_and_classifies(db):
    model = tiny_model()
    stored = activate(model.version, blobs.blob_sign(model.to_bytes()))

    assert blobs.is_signed(bytes(ModelVersion.objects.get(pk=stored.pk).blob))
    answer = LocalModelTier().classify("where is my new card", {})
    assert answer.intent == "card_arrival" and answer.model == f"local:{model.version}"


def test_a_rotated_secret_key_still_verifies_through_the_fallbacks(settings):
    settings.SECRET_KEY = "the-old-key-" + "x" * 50
    blob = blobs.blob_sign(tiny_model().to_bytes())
    settings.SECRET_KEY = "the-new-key-" + "y" * 50

    with pytest.raises(blobs.BlobRefused, match="does not verify"):
        blobs.blob_open(blob)
    settings.SECRET_KEY_FALLBACKS = ["the-old-key-" + "x" * 50]
    assert IntentModel.from_bytes(blobs.blob_open(blob)).intents == list(EXAMPLES)


def test_the_sign_command_signs_the_old_blobs_once_and_leaves_bad_signatures_refused(db, settings):
    old = tiny_model().to_bytes()  # what the learning loop stored before signing existed
    activate("before-signing", old)
    tier = LocalModelTier()
    assert tier.classify("my card has not arrived", {}) is None  # refused until signed

    out = io.StringIO()
    call_command("model_blobs_sign", "--dry-run", stdout=out)
    assert "would sign 1: before-signing" in out.getvalue()
    assert not blobs.is_signed(bytes(ModelVersion.objects.get(version="before-signing").blob))
    call_command("model_blobs_sign", stdout=io.StringIO())

    tier._checked = float("-inf")
    assert tier.classify("my card has not arrived", {}).model == "local:before-signing"
    default = settings.SECRET_KEY
    settings.SECRET_KEY = "another-key-" + "z" * 50
    ModelVersion.objects.create(version="other-key", n_examples=6, blob=blobs.blob_sign(old))
    settings.SECRET_KEY = default
    with pytest.raises(CommandError, match="1 signed blob.*other-key"):
        call_command("model_blobs_sign", stdout=io.StringIO())
    done = blobs.unsigned_blobs_sign(dry_run=True)
    assert done == {"signed": [], "verified": ["before-signing"], "refused": ["other-key"]}  # never re-signed


def modules_named(pickled: bytes) -> set[str]:
    """The top-level packages whose classes or functions a pickle loads."""
    seen: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            seen.add(module.split(".")[0])
            return super().find_class(module, name)

    Recorder(io.BytesIO(pickled)).load()
    return seen


def test_a_blob_made_before_the_classifier_moved_loads_after_it(db, tmp_path):
    """Trained by 58fa74c's own code (agents/localmodel/, from git), stored as it stored it, signed by
    the command, loaded by the tier from agents/intents/."""
    old = tmp_path / "old"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD_HEAD, "agents/localmodel"], capture_output=True, check=True
    )
    old.mkdir()
    subprocess.run(["tar", "x", "-C", str(old)], input=archive.stdout, check=True)
    (old / "agents" / "__init__.py").write_text("")
    script = (
        "import csv, sys; import agents.localmodel.train as train; train.ENCODER = False\n"
        "rows = list(csv.reader(open(sys.argv[1])))\n"
        "rows = [r for r in rows if r[1] == 'card_arrival'][:60] + [r for r in rows if r[1] == 'exchange_rate'][:60]\n"
        "model = train.train_model([r[0] for r in rows], [r[1] for r in rows], folds=2)\n"
        "open(sys.argv[2], 'wb').write(model.to_bytes())\n"
    )
    blob_path = tmp_path / "blob"
    data = ROOT / "agents" / "data" / "banking77" / "train.csv"
    subprocess.run([sys.executable, "-c", script, str(data), str(blob_path)], cwd=old, check=True, timeout=300)
    blob = blob_path.read_bytes()
    state = pickle.loads(zlib.decompress(blob))
    assert modules_named(zlib.decompress(blob)) | modules_named(state["vectorizer"]) <= {"numpy", "sklearn", "scipy"}

    activate("from-58fa74c", blob)
    call_command("model_blobs_sign", stdout=io.StringIO())
    answer = LocalModelTier().classify("my card still has not arrived", {})

    assert answer is not None and answer.model == "local:from-58fa74c"
    assert answer.intent == "card_arrival"
