"""Leaderboard: one row per policy, columns in order of trust, intervals in the cells.

The columns and their order come from ``pipeline.report.leaderboard`` (the terminal's table), so the two
always agree on the order and the leader.  A cell is marked best only where the paired bootstrap difference
between the leader and the runner-up (``draws.parquet``) excludes zero; columns without stored draws
(replay metrics other than CTR, diversity, coverage) are never marked.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import Run, table
from dashboard.views.common import ORACLE, metric_summary, url_selectbox, with_interval
from pipeline import layout
from pipeline.beyond_accuracy import NAMES as BEYOND_ACCURACY
from pipeline.config import METRIC_NAMES
from pipeline.pooling import pooled_draws, with_logging_draws
from pipeline.offpolicy import OBSERVED, OBSERVED_SLATE, SLATE_ESTIMATORS, observed_name
from pipeline.report import leaderboard

TITLE = "Leaderboard"
LOWER_IS_BETTER = {"true_regret"}
MORE_TRUTH = {"true_hit_rate", "true_regret"}
BEST = "font-weight: bold; background-color: #d4edda"


def render(run: Run, runs: list[Run]) -> None:
    for note in run.info.get("notes") or []:  # e.g. why replay metrics are n/a: said where the n/a cells are
        st.warning(note)
    summary = metric_summary(run)
    k_values = sorted(summary["k"].unique())
    default_k = run.info.get("leaderboard_k", k_values[-1])
    k = url_selectbox("k", k_values, default_k)
    off_policy = table(run, layout.OFF_POLICY) if run.has_table(layout.OFF_POLICY) else None
    decision_metric = (run.info.get("decision") or {}).get("metric")
    decision_metric = decision_metric if decision_metric and decision_metric.endswith(f"@{k}") else None
    values = leaderboard(table(run, layout.METRICS), k, off_policy, decision_metric,
                         tuple(run.info.get("leaderboard_estimators") or ("DR", "SNIPS")))
    pooled = table(run, layout.OFF_POLICY_POOLED) if run.has_table(layout.OFF_POLICY_POOLED) else off_policy
    cells = _cells(values, summary, pooled, k)
    best = _significant_best(run, values)

    sort_by = values.columns[0]
    contenders = values[sort_by].drop(index=ORACLE, errors="ignore").dropna()
    if len(contenders):
        leader = contenders.idxmax()
        st.metric(f"best {sort_by} (Oracle excluded): {leader}", f"{contenders[leader]:.4f}",
                  help="separated from the runner-up by a significant paired difference" if best.get(sort_by)
                  else "NOT significantly better than the runner-up (paired 95% interval contains 0)")
    replay_note = (" Replay columns are **biased** here: the log's propensities are not uniform."
                   if run.info.get("replay_biased") else " Replay columns assume a uniformly random log.")
    st.caption(f"Mean over {len(run.seeds)} seed(s); cells show the value and its 95% interval. Sorted by {sort_by}. "
               "A cell is highlighted only where its policy is significantly better than the runner-up (paired "
               "bootstrap)." + replay_note)
    families = {"Decision metric, true value and off-policy estimates": [], "Replay (Mab2Rec / Jurity)": [],
                "More ground truth": [], "Beyond accuracy (never marked best: more is not better by itself)": []}
    for column in cells.columns:  # four narrow tables rather than one too wide for a laptop screen
        name = column.split("@")[0]
        family = 3 if name in BEYOND_ACCURACY else 1 if name in METRIC_NAMES else 2 if name in MORE_TRUTH else 0
        families[list(families)[family]].append(column)
    for title, columns in families.items():
        if not columns:
            continue
        st.subheader(title)
        rows = cells.index[(cells[columns] != "n/a").any(axis=1)]  # e.g. the logging policy has no replay lists
        marks = pd.DataFrame("", index=rows, columns=columns)
        for column in columns:
            if best.get(column):
                marks.loc[best[column], column] = BEST
        st.dataframe(cells.loc[rows, columns].style.apply(lambda _, m=marks: m, axis=None), width="stretch")
    st.session_state["leaderboard_best"] = {column: [best[column]] if best.get(column) else [] for column in cells}


def _cells(values: pd.DataFrame, summary: pd.DataFrame, off_policy: pd.DataFrame | None, k: int) -> pd.DataFrame:
    """Each value with its interval: metrics from the metric summary, off-policy estimates from their pooled rows
    (``off_policy_pooled``: the intervals the decision and the terminal show; runs written before it have only
    per-fold rows, averaged here)."""
    intervals = {}
    for r in summary.itertuples():  # a mean over fewer cells than the run has says so
        missing = f" (n/a in {r.cells - r.defined} of {r.cells} test folds)" if 0 < r.defined < r.cells else ""
        intervals.setdefault(f"{r.metric}@{r.k}", {})[r.policy] = (r.value, r.low, r.high, missing)
    if off_policy is not None:
        slate = off_policy["estimator"].isin([*SLATE_ESTIMATORS, OBSERVED_SLATE])  # at the log's slots, not k
        at_k = off_policy[slate | (off_policy["k"] == k)]
        for (policy, name, at), group in at_k.groupby(["policy", "estimator", "k"]):
            columns = [f"{name}@{at}"] if name not in (OBSERVED, OBSERVED_SLATE) else [  # the logging policy's rows
                c for c in values.columns if c.split("@")[0] in set(at_k["estimator"])
                and observed_name(c.split("@")[0]) == name]
            for column in columns:
                unreliable = "" if group["reliable"].all() else " !"
                value, low, high = group[["value", "low", "high"]].mean()
                intervals.setdefault(column, {})[policy] = (value, low, high, unreliable)
    out = pd.DataFrame(index=values.index, columns=values.columns, dtype=object)
    for column in values.columns:
        for policy in values.index:
            found = intervals.get(column, {}).get(policy)
            out.loc[policy, column] = "n/a" if found is None else with_interval(*found[:3]) + "".join(found[3:])
    return out


def _significant_best(run: Run, values: pd.DataFrame) -> dict[str, str]:
    """Column -> the leader, for the columns whose leader is significantly ahead of the runner-up (paired draws)."""
    if not run.has_table(layout.DRAWS):
        return {}
    draws = table(run, layout.DRAWS)
    out = {}
    for column in values.columns:
        if column.split("@")[0] in LOWER_IS_BETTER:
            continue
        pooled = pooled_draws(with_logging_draws(draws, column), column).drop(index=ORACLE, errors="ignore")
        ranked = values[column].reindex(pooled.index).dropna().sort_values(ascending=False)
        if len(ranked) < 2:
            continue
        leader, runner_up = ranked.index[:2]
        gap = pooled.loc[leader].to_numpy() - pooled.loc[runner_up].to_numpy()
        if pd.Series(gap).quantile(0.025) > 0:
            out[column] = leader
    return out

