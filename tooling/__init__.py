"""Tooling, not the product: the Messages API simulator, the benchmark, the whole system as
processes (for the fault suite and the benchmark), measurement commands. Installed as a Django
app only by the development and test settings; nothing under agents/, tickets/ or reviews/
imports it, and the runtime image leaves it out."""
