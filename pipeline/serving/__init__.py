"""Serving a policy of a run: the HTTP contract (app.py), a laptop mode that learns in-process (inline.py), and
the production path of seed 004: replicas (replica.py), a Redis feedback stream (streams.py), a trainer
(trainer.py), exploration with logged propensities (exploration.py) and the export back to evaluation (export.py)."""
