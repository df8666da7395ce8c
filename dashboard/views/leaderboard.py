"""Leaderboard: one row per policy at a chosen k, intervals in the cells, the best value per column marked."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import Run
from dashboard.views.common import ORACLE, metric_summary, with_interval

TITLE = "Leaderboard"
LOWER_IS_BETTER = {"true_regret"}
ORDER = ["AUC", "CTR", "Precision", "Recall", "NDCG", "MAP", "true_ctr", "true_hit_rate", "true_regret",
         "inter_list_diversity", "intra_list_diversity", "coverage", "novelty"]


def render(run: Run, runs: list[Run]) -> None:
    for note in run.info.get("notes") or []:  # e.g. why replay metrics are n/a: said where the n/a cells are
        st.warning(note)
    summary = metric_summary(run)
    k_values = sorted(summary["k"].unique())
    default_k = run.info.get("leaderboard_k", k_values[-1])
    k = st.selectbox("k", k_values, index=k_values.index(default_k) if default_k in k_values else 0)
    at_k = summary[summary["k"] == k]
    columns = [name for name in ORDER if name in set(at_k["metric"])] + sorted(set(at_k["metric"]) - set(ORDER))
    values = at_k.pivot(index="policy", columns="metric", values="value").reindex(columns=columns)
    cells = at_k.assign(cell=[with_interval(*row) for row in at_k[["value", "low", "high"]].itertuples(index=False)])
    shown = cells.pivot(index="policy", columns="metric", values="cell").reindex(columns=columns)
    sort_by = "true_ctr" if "true_ctr" in values else columns[0]
    order = values.drop(index=ORACLE, errors="ignore").sort_values(sort_by, ascending=False).index.tolist()
    order += [ORACLE] if ORACLE in values.index else []
    values, shown = values.loc[order], shown.loc[order]
    shown.columns = [f"{name}@{k}" for name in shown.columns]

    best = pd.DataFrame("", index=shown.index, columns=shown.columns)
    contenders = values.drop(index=ORACLE, errors="ignore")
    for name, label in zip(values.columns, shown.columns):
        if contenders[name].notna().any():
            target = contenders[name].min() if name in LOWER_IS_BETTER else contenders[name].max()
            winners = contenders.index[contenders[name] == target]  # ties are all marked
            best.loc[winners, label] = "font-weight: bold; background-color: #d4edda"
    if contenders[sort_by].notna().any():
        leader = contenders[sort_by].idxmax()
        st.metric(f"best {sort_by}@{k} (Oracle excluded): {leader}", f"{contenders.loc[leader, sort_by]:.4f}")
    st.caption(f"Mean over {len(run.seeds)} seed(s); cells show the value and its 95% interval. The best "
               f"policy per column (Oracle excluded) is highlighted. Sorted by {sort_by}@{k}.")
    st.dataframe(shown.style.apply(lambda _: best, axis=None), width="stretch")
    st.session_state["leaderboard_best"] = {label: values.index[(best[label] != "")].tolist() for label in shown}
