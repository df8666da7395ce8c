"""User-facing errors.

Every problem a user can fix (a wrong config key, a missing column, a bad value in their data) is raised
as a ``PipelineError`` subclass whose message names the file, the key or column, what was expected and
what was found.  The CLI prints that message alone, without a traceback, and exits with code 2.  So does
an operating-system refusal the user can fix (a full disk, a read-only or missing folder): see
``describe_os_error``.  Anything else is a bug: the CLI says so in one paragraph, writes the traceback to
a file and exits with code 1.
"""

import errno

#: Operating-system errors that are the user's to fix (space, permissions, paths), not bugs of ours.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                  errno.ENAMETOOLONG}


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


def describe_os_error(error: OSError) -> str | None:
    """One paragraph for an ``OSError`` the user can fix, or None for anything else (a bug)."""
    code = error.errno
    if code is None and "No space left on device" in str(error):  # pyarrow's IO errors carry no errno
        code = errno.ENOSPC
    if code not in USER_OS_ERRORS:
        return None
    where = f" {error.filename}" if error.filename else ""
    advice = {errno.ENOSPC: "free some space or point run.output_dir at another disk",
              errno.EDQUOT: "free some space or point run.output_dir at another disk"}.get(
        code, "check the path and its permissions (run.output_dir for outputs, data.files for inputs)")
    reason = error.strerror or str(error)
    return f"cannot use{where}: {reason}; {advice}. Nothing was kept of this run"
