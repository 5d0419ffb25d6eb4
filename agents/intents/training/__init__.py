"""Training and evaluation of the local model (scikit-learn, SciPy): cross-validation, thresholds,
the encoder head's fitting, the whole-system evaluation. Run by the retraining beat task, the
`retrain` and `evaluate` commands and the research tooling; the request path never imports it
(.importlinter, `training-apart`)."""
