"""Each metric against k, one line per policy, with its interval as a band."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run
from dashboard.views.common import metric_summary, url_selectbox

TITLE = "Metrics at k"


def render(run: Run, runs: list[Run]) -> None:
    summary = metric_summary(run)
    metrics = [m for m in summary["metric"].unique() if summary.loc[summary["metric"] == m, "k"].nunique() > 1]
    if not metrics:
        st.info("Every metric of this run has a single k; nothing to plot against k.")
        return
    metric = url_selectbox("metric", metrics, "true_ctr" if "true_ctr" in metrics else metrics[0])
    data = summary[summary["metric"] == metric].sort_values(["policy", "k"])
    policies = list(dict.fromkeys(data["policy"]))
    shown = st.multiselect("policies", policies, default=policies, help="pick a few to compare them closely")
    data = data[data["policy"].isin(shown)]
    # Ten distinguishable colours (Tableau 10) and a dash pattern per policy, so ten or more lines stay apart.
    colour = alt.Color("policy:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="right"))
    base = alt.Chart(data).encode(x=alt.X("k:O", title="k (list length)", axis=alt.Axis(labelAngle=0, labelFontSize=13,
                                                                                       titleFontSize=14)),
                                  color=colour)
    band = base.mark_area(opacity=0.12).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True, strokeWidth=2.5).encode(
        y=alt.Y("value:Q", title=metric, axis=alt.Axis(labelFontSize=13, titleFontSize=14)),
        strokeDash=alt.StrokeDash("policy:N", legend=None), tooltip=["policy", "k", "value", "low", "high"])
    st.altair_chart((band + line).properties(height=420), width="stretch")
    st.dataframe(data.pivot(index="policy", columns="k", values="value").round(4), width="stretch")
