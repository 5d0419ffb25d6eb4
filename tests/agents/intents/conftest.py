"""The Claude tier's fixtures (the Messages API simulator, a private Redis key prefix per test, a small
pack) are the provider's, in tests/agents/llm/conftest.py; the tier's own tests use them from here."""

from tests.agents.llm.conftest import catalog, configure, llm, posts, sim  # noqa: F401
