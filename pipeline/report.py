"""Report stage: the leaderboard, one row per policy at the chosen k (metrics averaged over folds)."""

from __future__ import annotations

import pandas as pd

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
                                                     ("true_regret", 1)]
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


def format_leaderboard(table: pd.DataFrame) -> str:
    return table.to_string(float_format=lambda value: f"{value:.4f}", na_rep="n/a")
