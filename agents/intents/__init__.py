"""The intent classifier: the catalogue of intents (`catalog`, loaded from packs by `packs`), the tiers
a classify stage is lent, cheapest first and side by side — the pack's rules (`rules`, over
`safe_regex`), the local model (`local`, serving `localmodel/`), Claude (`claude`, over the provider
plumbing in `agents/llm/`) — and the learning loop (`learning`). Training and evaluation are
`agents/intents/training/`, which nothing here but `learning` imports (.importlinter: `training-apart`)."""
