"""Off-policy estimates (IPS, SNIPS, DR) with intervals, next to each policy's true value."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run, table
from dashboard.views.common import absent

TITLE = "Off-policy vs truth"


def render(run: Run, runs: list[Run]) -> None:
    if not run.has("off_policy.parquet"):
        absent("Off-policy estimation", run)
        return
    estimates = table(run, "off_policy")
    per_policy = estimates.groupby(["policy", "estimator"], sort=False)[["value", "low", "high", "matched_events"]].mean()
    per_policy = per_policy.reset_index()
    metrics = table(run, "metrics")
    truth = metrics.query("metric == 'true_ctr' and k == 1").groupby("policy")["value"].mean()
    chart = alt.Chart(per_policy).encode(y=alt.Y("policy:N"), color="estimator:N", yOffset="estimator:N")
    layers = chart.mark_rule().encode(x=alt.X("low:Q", title="top-1 value"), x2="high:Q") + chart.mark_point().encode(x="value:Q")
    if len(truth):
        truth_frame = truth.rename("truth").reset_index()
        layers += alt.Chart(truth_frame).mark_tick(color="black", thickness=3).encode(y="policy:N", x="truth:Q")
        per_policy = per_policy.merge(truth_frame, on="policy", how="left")
    st.caption("Mean over seeds and folds. Black ticks: the policy's true top-1 value from the click model.")
    st.altair_chart(layers, width="stretch")
    st.dataframe(per_policy.round(4), width="stretch", hide_index=True)
    if run.has("off_policy_summary.parquet"):
        st.subheader("Against the truth: bias, RMSE, interval coverage")
        st.dataframe(table(run, "off_policy_summary").round(4), width="stretch", hide_index=True)
