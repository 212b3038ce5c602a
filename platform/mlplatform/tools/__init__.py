"""Tools beside the CLI, used by it, by tests and by benchmarks; nothing below the CLI imports them.

`sample_data` writes the demo's heterogeneous sources; `load` keeps an endpoint busy during drills.
"""
