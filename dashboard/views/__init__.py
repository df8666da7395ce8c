"""One module per dashboard page; each has ``TITLE`` and ``render(run, runs)``."""
