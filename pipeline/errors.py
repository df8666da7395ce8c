"""User-facing errors.

Every problem a user can fix (a wrong config key, a missing column, a bad value in their data) is raised
as a ``PipelineError`` subclass whose message names the file, the key or column, what was expected and
what was found.  The CLI prints that message alone, without a traceback, and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """A problem in the user's config or data, described in one paragraph."""

    exit_code = 2


class ConfigError(PipelineError):
    """The YAML config (or a ``--set`` override) is invalid."""


class DataError(PipelineError):
    """An input data file is missing, unreadable or violates the expected layout."""


def examples(values, limit: int = 5) -> str:
    """A few distinct values for an error message, as plain Python reprs (``3``, not ``np.int64(3)``)."""
    import pandas as pd

    return ", ".join(repr(value) for value in pd.unique(pd.Series(values)).tolist()[:limit])
