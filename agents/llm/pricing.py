"""What a call cost, from the one price table in settings (USD per million tokens)."""

from __future__ import annotations

from agents.llm.base import Usage
from agents.llm.config import llm_settings

MILLION = 1_000_000


def cost_usd(model_class: str, usage: Usage, *, batch: bool = False) -> float:
    """Input, output, cache writes and cache reads at the class's prices; halved-style batch prices."""
    prices = llm_settings()["MODELS"][model_class]
    input_price, output_price = prices["input"], prices["output"]
    discount = 1.0
    if batch:
        # The batch discount applies to every token kind; the table gives it for input and output.
        discount = prices["batch_input"] / input_price if input_price else 1.0
        input_price, output_price = prices["batch_input"], prices["batch_output"]
    total = (
        usage.input_tokens * input_price
        + usage.output_tokens * output_price
        + usage.cache_write_tokens * prices["cache_write"] * discount
        + usage.cache_read_tokens * prices["cache_read"] * discount
    )
    return round(total / MILLION, 8)
