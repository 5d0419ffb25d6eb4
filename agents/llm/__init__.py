"""The Claude tier: the model client, the shared rate limiter, the answer cache, routing, cost, batches.

Read docs/claude-tier.md first. The simulator of the Messages API lives in `tooling.llm_simulator`.
"""
