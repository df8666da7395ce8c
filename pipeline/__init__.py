"""Offline evaluation of contextual-bandit recommenders: data -> features -> policies -> evaluation -> run directory."""

__version__ = "0.1.0"
