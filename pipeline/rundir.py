"""The run directory: every output of one run, written atomically.

Files are written into a hidden ``.partial-*`` folder next to the final one and the folder is renamed into
place only after the last file (``run.json``, with ``"status": "complete"``) is written, so an interrupted
or failed run never leaves a folder that looks complete; a failure removes the partial folder.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import yaml

PARTIAL_PREFIX = ".partial-"
COMPLETE_MARKER = "run.json"


class RunDirectory:
    def __init__(self, output_dir: Path, name: str):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        final = Path(output_dir) / f"{stamp}-{name}"
        suffix = 1
        while final.exists():
            suffix += 1
            final = Path(output_dir) / f"{stamp}-{name}-{suffix}"
        self.final = final
        self.name = final.name
        self.partial = final.parent / f"{PARTIAL_PREFIX}{final.name}-{os.getpid()}"

    def __enter__(self) -> "RunDirectory":
        self.partial.mkdir(parents=True)
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        os.rename(self.partial, self.final)

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
