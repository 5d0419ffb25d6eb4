"""Unicode normalisation with bounded work, shared by the API's limits and the parse stage.

NFKC can lengthen a text many times over ("㏘" is four characters once normalised), so limits are
applied to the normalised form. And CPython sorts a run of combining marks by insertion: 10,000
marks of two alternating classes cost over a second. Like Unicode's stream-safe format (UAX #15),
a run of combining marks is cut to `MAX_COMBINING_RUN` before normalising (no script needs more).
"""

from __future__ import annotations

import unicodedata

import re2

MAX_COMBINING_RUN = 30


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    return options


# Marks, and the two half-width sound marks that decompose to combining ones (U+FF9E, U+FF9F).
_LONG_MARK_RUN = re2.compile(r"[\p{M}\x{FF9E}\x{FF9F}]{" + str(MAX_COMBINING_RUN + 1) + ",}", _options())


def _keep_first(match: re2._Match) -> bytes:
    return match.group().decode("utf-8")[:MAX_COMBINING_RUN].encode("utf-8")


def cut_mark_runs(text: str) -> str:
    """Keep the first `MAX_COMBINING_RUN` marks of each longer run of combining marks."""
    if text.isascii():
        return text
    # As bytes: a lone surrogate (which the API refuses later) must not make this raise.
    data = text.encode("utf-8", "surrogatepass")
    return _LONG_MARK_RUN.sub(_keep_first, data).decode("utf-8", "surrogatepass")


def nfkc(text: str) -> str:
    """NFKC of `text` with over-long runs of combining marks cut first: linear in the input."""
    return unicodedata.normalize("NFKC", cut_mark_runs(text))
