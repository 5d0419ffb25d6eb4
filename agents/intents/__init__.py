"""Classifier tiers, cheapest first: rules, the local model, Claude."""
