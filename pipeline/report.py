"""Report stage: the leaderboard, one row per policy at the chosen k (metrics averaged over folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.beyond_accuracy import NAMES as BEYOND_ACCURACY
from pipeline.config import METRIC_NAMES
from pipeline.evaluation import ORACLE


def leaderboard(metrics: pd.DataFrame, k: int) -> pd.DataFrame:
    """Pivot the long metric table to one row per policy.

    Replay metrics and ground-truth metrics are shown at ``k``, plus ``true_ctr@1`` (the value of each
    policy's first item) when ground truth exists.  Rows are sorted by ``true_ctr@1`` when known, else by
    replay ``CTR@k``; the Oracle row comes last as the reference.
    """
    means = metrics.groupby(["policy", "metric", "k"], sort=False)["value"].mean().reset_index()
    wanted = [(name, k) for name in METRIC_NAMES] + [("true_ctr", 1), ("true_ctr", k), ("true_hit_rate", k),
                                                     ("true_regret", 1)] + [(name, k) for name in BEYOND_ACCURACY]
    columns = []
    for name, at in dict.fromkeys(wanted):
        values = means[(means["metric"] == name) & (means["k"] == at)].set_index("policy")["value"]
        if len(values):
            columns.append(values.rename(f"{name}@{at}"))
    table = pd.concat(columns, axis=1)
    table = table.reindex(list(dict.fromkeys(metrics["policy"])))
    sort_by = "true_ctr@1" if "true_ctr@1" in table else f"CTR@{k}"
    if sort_by in table:
        policies = table.drop(index=ORACLE, errors="ignore").sort_values(sort_by, ascending=False)
        table = pd.concat([policies, table.loc[[ORACLE]]]) if ORACLE in table.index else policies
    table.index.name = "policy"
    return table


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean (NaN bounds below two values, NaN mean for none)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


#: The range of every metric's true value (all of them lie in [0, 1] except novelty, -log2 of a share).
UNBOUNDED_ABOVE = {"novelty"}


def metric_range(metric: str) -> tuple[float, float]:
    return (0.0, np.inf) if metric in UNBOUNDED_ABOVE else (0.0, 1.0)


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each (policy, metric, k), with a 95% Student-t interval across seeds.

    Each seed's value is first averaged over its folds, so a seed counts once whatever the split.  The interval
    is cut to the metric's range (a t-interval on a few values near 1 would otherwise reach past it: a coverage
    of 0.995 [0.983, 1.007]); ``n_undefined_seeds`` counts the seeds where the metric had no value (an AUC
    without a clicked matched event), which the mean and interval leave out.
    """
    per_seed = metrics.groupby(["policy", "metric", "k", "seed"], sort=False)["value"].mean().reset_index()
    rows = []
    for (policy, metric, k), group in per_seed.groupby(["policy", "metric", "k"], sort=False):
        values = group["value"].dropna().to_numpy()
        mean, low, high = t_interval(values)
        floor, ceiling = metric_range(metric)
        rows.append((policy, metric, k, len(values), len(group) - len(values), mean,
                     np.clip(low, floor, ceiling), np.clip(high, floor, ceiling)))
    return pd.DataFrame(rows, columns=["policy", "metric", "k", "n_seeds", "n_undefined_seeds", "mean", "low", "high"])


def format_leaderboard(table: pd.DataFrame) -> str:
    """Accuracy and ground-truth columns first; beyond-accuracy columns in a second block (terminal width)."""
    beyond = [c for c in table.columns if c.split("@")[0] in BEYOND_ACCURACY]
    blocks = [table.drop(columns=beyond)] + ([table[beyond]] if beyond else [])
    return "\n\n".join(block.to_string(float_format=lambda value: f"{value:.4f}", na_rep="n/a") for block in blocks)
