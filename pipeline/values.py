"""Plain-value helpers shared by the pipeline, the service and the dashboard (no project imports here)."""

import numpy as np


def plain(value):
    """NumPy scalars -> Python scalars, so ids compare, hash and serialise (JSON, Parquet filters) alike."""
    return value.item() if isinstance(value, np.generic) else value
