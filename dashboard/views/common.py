"""Helpers shared by the pages: metric summaries with intervals, and 'not in this run' notes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data import Run, table

ORACLE = "Oracle"


def metric_summary(run: Run) -> pd.DataFrame:
    """``policy, metric, k, value, low, high, support`` averaged over folds, and over seeds when several.

    With one seed the interval is the bootstrap interval (averaged over folds); with several it is the
    pipeline's 95% interval across seeds (``seed_summary``).
    """
    metrics = table(run, "metrics")
    keys = ["policy", "metric", "k"]
    summary = metrics.groupby(keys, sort=False)[["value", "low", "high", "support"]].mean().reset_index()
    if len(run.seeds) > 1 and run.has("seed_summary.parquet"):
        across = table(run, "seed_summary").rename(columns={"mean": "value"})
        summary = summary.drop(columns=["value", "low", "high"]).merge(across[keys + ["value", "low", "high"]], on=keys)
    return summary


def with_interval(value: float, low: float, high: float) -> str:
    if np.isnan(value):
        return "n/a"
    if np.isnan(low) or np.isnan(high):
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def choose(label: str, options) -> object:
    """A select box when there is a choice, else the only option (no widget for a single seed or fold)."""
    options = sorted(pd.unique(pd.Series(list(options))).tolist())
    return st.selectbox(label, options) if len(options) > 1 else options[0]


def absent(what: str, run: Run) -> None:
    notes = run.info.get("notes") or []
    st.info(f"{what} is not in this run." + ("".join(f" {note}." for note in notes) if notes else ""))
