"""Model blobs signed: the local model's bytes in `ModelVersion.blob` carry an HMAC of themselves, and
nothing unpickles a blob whose HMAC does not verify.

A stored blob is `MAGIC + HMAC-SHA256(key, bytes) + bytes`, the key derived from `SECRET_KEY` (Django's
`salted_hmac`, salted for this use only; `SECRET_KEY_FALLBACKS` still verify, so the key rotates the
way Django's own signatures do). Unpickling runs code, so write access to the table must not be
code execution on every worker: a blob that was changed, or signed under another key, is refused
(`BlobRefused`) before `pickle` sees a byte. Blobs stored before signing existed have no MAGIC and are
refused the same way until `manage.py model_blobs_sign` has signed them (once, after the upgrade:
docs/local-model.md, "Signed model blobs").
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.utils.crypto import salted_hmac
from prometheus_client import Counter

from agents.intents.localmodel.model import IntentModel

MAGIC = b"agents-model-blob:hmac-sha256:"
SALT = "agents.intents.blobs.model-blob"
DIGEST_SIZE = 32

REFUSED = Counter(
    "pipeline_model_blobs_refused_total",
    "Local model blobs refused before unpickling: unsigned, or their signature does not verify.",
    ["reason"],
)


class BlobRefused(ValueError):
    """The blob is not signed, or its signature does not verify: it is never unpickled."""

    reason = "bad_signature"


class BlobUnsigned(BlobRefused):
    """The blob was stored before signing existed (or had its signature cut off)."""

    reason = "unsigned"


def _keys() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _mac(data: bytes, secret: str) -> bytes:
    return salted_hmac(SALT, data, secret=secret, algorithm="sha256").digest()


def is_signed(blob: bytes) -> bool:
    """Whether the blob carries a signature (not whether it verifies)."""
    return bytes(blob).startswith(MAGIC)


def blob_sign(data: bytes) -> bytes:
    """The bytes to store for a model's `to_bytes()`: signed under the current SECRET_KEY."""
    data = bytes(data)
    return MAGIC + _mac(data, settings.SECRET_KEY) + data


def blob_open(blob: bytes) -> bytes:
    """The model's bytes of a stored blob, once its signature verifies; raises BlobRefused otherwise."""
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise BlobUnsigned("the model blob is not signed (stored before signing? run `manage.py model_blobs_sign`)")
    signature = blob[len(MAGIC) : len(MAGIC) + DIGEST_SIZE]
    data = blob[len(MAGIC) + DIGEST_SIZE :]
    if not any(hmac.compare_digest(signature, _mac(data, key)) for key in _keys()):
        raise BlobRefused("the model blob's signature does not verify: it was changed, or signed under another key")
    return data


def model_load(blob: bytes, *, version: str = "") -> IntentModel:
    """The model of a stored blob, unpickled only when its signature verifies. A refusal is counted
    (`pipeline_model_blobs_refused_total`) and raised as BlobRefused, naming the version."""
    try:
        data = blob_open(blob)
    except BlobRefused as exc:
        REFUSED.labels(reason=exc.reason).inc()
        raise type(exc)(f"local model {version or '?'}: {exc}") from None
    return IntentModel.from_bytes(data)


def unsigned_blobs_sign(*, dry_run: bool = False) -> dict[str, list[str]]:
    """Sign the blobs stored before signing existed, once, after the upgrade: versions by what was done.

    "signed": unsigned blobs, now signed under the current key (trusted as the learning loop's own: run
    this only on a database whose model rows nobody else could write); "verified": signed already, and
    they verify; "refused": signed, but the signature does not verify — left as they are and never
    signed again (retrain, or delete the row)."""
    from django.db import transaction

    from agents.models import ModelVersion

    done: dict[str, list[str]] = {"signed": [], "verified": [], "refused": []}
    with transaction.atomic():
        for row in ModelVersion.objects.select_for_update().only("pk", "version", "blob").order_by("pk"):
            blob = bytes(row.blob)
            if not is_signed(blob):
                if not dry_run:
                    ModelVersion.objects.filter(pk=row.pk).update(blob=blob_sign(blob))
                done["signed"].append(row.version)
                continue
            try:
                blob_open(blob)
            except BlobRefused:
                done["refused"].append(row.version)
            else:
                done["verified"].append(row.version)
    return done
