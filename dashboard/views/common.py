"""Helpers shared by the pages: metric summaries with intervals, and 'not in this run' notes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data import Run, table
from pipeline import layout

ORACLE = "Oracle"


def metric_summary(run: Run) -> pd.DataFrame:
    """``policy, metric, k, value, low, high, support`` averaged over folds, and over seeds when several, with
    ``defined`` of ``cells`` (seed, fold) cells holding a value (an AUC without a clicked event has none).

    With one seed the interval is the bootstrap interval (averaged over folds); with three or more it is the
    pipeline's 95% interval across seeds (``seed_summary``); with two seeds, where a t-interval says nothing,
    the bootstrap interval averaged over seeds.
    """
    metrics = table(run, layout.METRICS)
    keys = ["policy", "metric", "k"]
    summary = metrics.groupby(keys, sort=False)[["value", "low", "high", "support"]].mean().reset_index()
    cells = metrics.groupby(keys, sort=False)["value"].agg(defined="count", cells="size").reset_index()
    if len(run.seeds) > 1 and run.has_table(layout.SEED_SUMMARY):
        across = table(run, layout.SEED_SUMMARY).rename(columns={"mean": "value"})[keys + ["value", "low", "high"]]
        merged = summary.merge(across, on=keys, suffixes=("_bootstrap", ""))
        for bound in ("low", "high"):  # no interval across seeds (fewer than three): the bootstrap's
            merged[bound] = merged[bound].fillna(merged[f"{bound}_bootstrap"])
        summary = merged[keys + ["value", "low", "high", "support"]]
    return summary.merge(cells, on=keys)  # defined / cells: the (seed, fold) cells with a value / all of them


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


def url_widget(widget, label: str, options: list, default, key: str, **kwargs):
    """A choice widget whose value lives in the page's URL (``?k=5``), so a reload or a shared link keeps it.

    The URL seeds the widget's session state once (or again when its value is no longer an option); after that
    the widget owns it, and every choice is written back to the URL."""
    texts = [str(option) for option in options]
    if key not in st.session_state or str(st.session_state[key]) not in texts:
        wanted = st.query_params.get(key, str(default))
        st.session_state[key] = options[texts.index(wanted)] if wanted in texts else (
            default if default in options else options[0])
    chosen = widget(label, options, key=key, **kwargs)
    st.query_params[key] = str(chosen)
    return chosen


def url_selectbox(label: str, options: list, default, key: str | None = None):
    return url_widget(st.selectbox, label, options, default, key or label)
