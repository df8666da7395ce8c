"""Each metric against k, one line per policy, with its interval as a band."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run
from dashboard.views.common import metric_summary

TITLE = "Metrics at k"


def render(run: Run, runs: list[Run]) -> None:
    summary = metric_summary(run)
    metrics = [m for m in summary["metric"].unique() if summary.loc[summary["metric"] == m, "k"].nunique() > 1]
    if not metrics:
        st.info("Every metric of this run has a single k; nothing to plot against k.")
        return
    metric = st.selectbox("metric", metrics, index=metrics.index("true_ctr") if "true_ctr" in metrics else 0)
    data = summary[summary["metric"] == metric].sort_values(["policy", "k"])
    base = alt.Chart(data).encode(x=alt.X("k:O", title="k"), color="policy:N")
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("value:Q", title=metric), tooltip=["policy", "k", "value", "low", "high"])
    st.altair_chart(band + line, width="stretch")
    st.dataframe(data.pivot(index="policy", columns="k", values="value").round(4), width="stretch")
