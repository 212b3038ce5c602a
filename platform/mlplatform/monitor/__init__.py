"""Monitoring: what the endpoint saw, compared with what the model was trained on, and the loop that acts on it.

`serve.inference_log` writes the inference log and the feedback (the data plane); this package only reads
them: `window` reads a time window of the log and joins its labels, `stats` holds the drift statistics,
`drift` computes them on Ray for two tables, `report` draws them, `online` is the always-valid
champion/challenger test, and `loop` is continuous training (drift → retrain → gate → canary → promote or
roll back).
"""
