"""Config: the resolved YAML, a diff between two runs, and one metric from several runs side by side."""

from __future__ import annotations

import difflib

import pandas as pd
import streamlit as st

from dashboard.data import Run, RunDataError, resolved_config
from dashboard.views.common import metric_summary

TITLE = "Config and compare runs"


def render(run: Run, runs: list[Run]) -> None:
    text = resolved_config(run)
    st.subheader(f"Resolved config of {run.name}")
    st.code(text, language="yaml")
    others = [r for r in runs if r.name != run.name]
    if not others:
        st.info("Only one run: nothing to compare with.")
        return
    other = next(r for r in others if r.name == st.selectbox("diff against", [r.name for r in others]))
    try:
        diff = "\n".join(difflib.unified_diff(resolved_config(other).splitlines(), text.splitlines(),
                                              other.name, run.name, lineterm=""))
    except RunDataError as error:
        st.error(str(error))
        diff = None
    if diff is not None:
        st.code(diff or "(identical configs)", language="diff")

    st.subheader("Compare runs")
    chosen = st.multiselect("runs", [r.name for r in runs], default=[run.name, other.name])
    summaries = {}
    for candidate in [r for r in runs if r.name in chosen]:
        try:
            summaries[candidate.name] = metric_summary(candidate)
        except RunDataError as error:
            st.error(str(error))
    if not summaries:
        return
    metrics = sorted(set.intersection(*(set(s["metric"]) for s in summaries.values())))
    metric = st.selectbox("metric", metrics, index=metrics.index("true_ctr") if "true_ctr" in metrics else 0)
    ks = sorted(set.intersection(*(set(s.loc[s["metric"] == metric, "k"]) for s in summaries.values())))
    k = st.selectbox("k ", ks)
    side_by_side = {name: s[(s["metric"] == metric) & (s["k"] == k)].set_index("policy")["value"]
                    for name, s in summaries.items()}
    st.dataframe(pd.DataFrame(side_by_side).round(4), width="stretch")
