"""Reading run directories for the dashboard: listing complete runs and loading their tables.

Every read goes through ``RunStore``; a missing or unreadable file raises ``RunDataError`` with a message
the page shows instead of a traceback.  Tables are cached by path and modification time, so a page
never reads the same file twice and never shows a stale one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from pipeline import layout
from pipeline.values import plain


class RunDataError(Exception):
    """A file of a run directory is missing or cannot be read."""


@dataclass(frozen=True)
class Run:
    path: Path
    info: dict  # run.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seeds(self) -> list[int]:
        return list(self.info.get("seeds") or [])

    def file(self, relative: str) -> Path:
        return self.path / relative

    def has(self, relative: str) -> bool:
        return (self.path / relative).is_file()

    def has_table(self, name: str) -> bool:
        return self.has(layout.parquet(name))


def list_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Complete runs under ``root``, newest first, and a message per folder that could not be read."""
    runs, problems = [], []
    if not root.is_dir():
        return [], [f"no run directory at {root}: run `python -m pipeline run configs/default.yaml` first"]
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        marker = folder / layout.RUN_JSON
        if not marker.is_file():
            continue  # not a run (or an incomplete one, which the pipeline never leaves under this name)
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError) as error:
            problems.append(f"{folder.name}: run.json is unreadable ({error})")
            continue
        if info.get("status") == "complete":
            runs.append(Run(folder, info))
    return runs, problems


@st.cache_data(show_spinner=False, max_entries=64)
def _read_table(path: str, modified: float, columns: tuple | None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=list(columns) if columns else None)


def table(run: Run, name: str, columns: tuple | None = None) -> pd.DataFrame:
    """``<run>/<name>.parquet`` as a DataFrame (``name`` from ``pipeline.layout``); ``RunDataError`` if it is
    missing or corrupt."""
    path = run.file(layout.parquet(name))
    if not path.is_file():
        raise RunDataError(f"{name}.parquet is not in run {run.name}")
    try:
        return _read_table(str(path), path.stat().st_mtime, columns)
    except Exception as error:  # pyarrow raises several types for damaged files
        raise RunDataError(f"{name}.parquet of run {run.name} cannot be read: {error}") from None


@st.cache_data(show_spinner=False, max_entries=256)
def _read_rows(path: str, modified: float, filters: tuple) -> pd.DataFrame:
    return pd.read_parquet(path, filters=[list(f) for f in filters])


def rows(run: Run, name: str, **equal) -> pd.DataFrame:
    """The rows of ``<run>/<name>.parquet`` whose columns equal the given values, read with Parquet filters
    (row groups that cannot match are skipped, so one context of a million-event run reads fast)."""
    path = run.file(layout.parquet(name))
    if not path.is_file():
        raise RunDataError(f"{name}.parquet is not in run {run.name}")
    filters = tuple((column, "==", plain(value)) for column, value in equal.items())
    try:
        return _read_rows(str(path), path.stat().st_mtime, filters)
    except Exception as error:
        raise RunDataError(f"{name}.parquet of run {run.name} cannot be read: {error}") from None


def resolved_config(run: Run) -> str:
    path = run.file(layout.CONFIG)
    if not path.is_file():
        raise RunDataError(f"config.yaml is not in run {run.name}")
    text = path.read_text()
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RunDataError(f"config.yaml of run {run.name} is not valid YAML: {error}") from None
    return text
