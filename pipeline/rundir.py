"""The run directory: every output of one run, written atomically.

Files are written into a hidden ``.partial-NAME`` folder next to the final one and the folder is renamed into
place only after the last file (``run.json``, with ``"status": "complete"``) is written, so an interrupted
or failed run never leaves a folder that looks complete; a failure removes the partial folder.

- Names are unique: ``NAME`` is reserved by creating ``.partial-NAME`` (an atomic ``mkdir``) while no folder
  ``NAME`` exists, so two runs started in the same second get ``...-default`` and ``...-default-2``.
- A run holds an exclusive lock on ``.partial-NAME/.owner`` while it works.  A run killed outright (``kill -9``,
  a power cut) cannot remove its partial folder, but its lock dies with it: the next run in the same
  ``output_dir`` finds the folder unlocked and removes it.
- ``work_dir`` is scratch space inside the partial folder (the executor's shared fold files), removed before
  the rename and, after a crash, together with the stale partial folder.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import yaml

from pipeline.errors import PipelineError
from pipeline.layout import RUN_JSON

PARTIAL_PREFIX = ".partial-"
COMPLETE_MARKER = RUN_JSON
OWNER_FILE = ".owner"
WORK_DIR = ".work"
UNLOCKED_GRACE_SECONDS = 600  # a partial folder without an owner file (an older version's) is stale after this

log = logging.getLogger("pipeline")


class RunDirectory:
    def __init__(self, output_dir: Path, name: str):
        self.output_dir = Path(output_dir)
        self.base_name = name
        self._owner = None

    def __enter__(self) -> "RunDirectory":
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.output_dir)
            self._reserve()
        except OSError as error:
            raise PipelineError(f"run.output_dir: cannot create a run folder in {self.output_dir}: "
                                f"{error.strerror or error} ({error.filename or self.output_dir}); choose a "
                                "writable folder with run.output_dir") from None
        return self

    def _reserve(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        for suffix in itertools.count(1):
            name = f"{stamp}-{self.base_name}" + (f"-{suffix}" if suffix > 1 else "")
            partial = self.output_dir / f"{PARTIAL_PREFIX}{name}"
            try:
                partial.mkdir()
            except FileExistsError:
                continue
            if (self.output_dir / name).exists():  # checked after the mkdir: a finished run renamed its folder
                partial.rmdir()
                continue
            self.name, self.partial, self.final = name, partial, self.output_dir / name
            # Locked before it gets its name, so no other run can ever find the owner file unlocked.
            unnamed = partial / f"{OWNER_FILE}-{os.getpid()}"
            self._owner = open(unnamed, "w")
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._owner.write(f"{os.getpid()}\n")
            self._owner.flush()
            unnamed.rename(partial / OWNER_FILE)
            return

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            self._release()
            return
        shutil.rmtree(self.partial / WORK_DIR, ignore_errors=True)
        (self.partial / OWNER_FILE).unlink()  # still locked through the open file until the rename is done
        os.rename(self.partial, self.final)  # the name was reserved, so nothing can be in the way
        self._release()

    def _release(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    @property
    def work_dir(self) -> Path:
        path = self.partial / WORK_DIR
        path.mkdir(exist_ok=True)
        return path

    def file(self, relative: str) -> Path:
        path = self.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_table(self, name: str, frame: pd.DataFrame, csv: bool = True, row_group_size: int | None = None) -> None:
        frame.to_parquet(self.file(f"{name}.parquet"), index=False, row_group_size=row_group_size)
        if csv:
            frame.to_csv(self.file(f"{name}.csv"), index=False)

    def write_json(self, name: str, data: Any) -> None:
        self.file(name).write_text(json.dumps(data, indent=2, default=str) + "\n")

    def write_yaml(self, name: str, data: Any) -> None:
        self.file(name).write_text(yaml.safe_dump(data, sort_keys=False))

    def write_pickle(self, name: str, value: Any) -> None:
        joblib.dump(value, self.file(name))

    def complete(self, summary: dict) -> None:
        """Write the marker file; call last, just before leaving the ``with`` block."""
        self.write_json(COMPLETE_MARKER, {"status": "complete", "name": self.name, **summary})


def remove_stale_partials(output_dir: Path) -> list[Path]:
    """Remove the ``.partial-*`` folders in ``output_dir`` whose run is gone (its owner lock is free)."""
    removed = []
    for partial in sorted(Path(output_dir).glob(f"{PARTIAL_PREFIX}*")):
        if partial.is_dir() and _abandoned(partial):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
            log.info("removed %s, left behind by a run that was killed", partial)
    return removed


def _abandoned(partial: Path) -> bool:
    try:
        with open(partial / OWNER_FILE) as owner:
            try:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its run is alive
            return True
    except FileNotFoundError:
        # Just created (the owner file follows the mkdir) or finishing (removed before the rename), or left by
        # a version without owner files: only an old folder is stale.
        try:
            return time.time() - partial.stat().st_mtime > UNLOCKED_GRACE_SECONDS
        except FileNotFoundError:
            return False


def check_complete_run(path: Path) -> dict:
    """The ``run.json`` of a finished run directory; ``PipelineError`` naming what ``path`` is instead."""
    path = Path(path)
    if not path.exists():
        problem = "does not exist"
    elif not path.is_dir():
        problem = "is a file, not a run directory"
    elif path.name.startswith(PARTIAL_PREFIX) or not (path / COMPLETE_MARKER).is_file():
        problem = "is not a finished run (it has no run.json: its run is still going, or was interrupted)"
    else:
        try:
            info = json.loads((path / COMPLETE_MARKER).read_text())
        except (OSError, ValueError) as error:
            raise PipelineError(f"{path / COMPLETE_MARKER} cannot be read as JSON ({error}); the run folder is "
                                "damaged: run the pipeline again") from None
        if isinstance(info, dict) and info.get("status") == "complete":
            return info
        problem = "is not a finished run (its run.json does not say status: complete)"
    finished = sorted(p.name for p in path.parent.glob("*") if (p / COMPLETE_MARKER).is_file()) \
        if path.parent.is_dir() else []
    hint = f"; finished runs in {path.parent}: {', '.join(finished[-5:])}" if finished else ""
    raise PipelineError(f"run directory {path} {problem}{hint}")
