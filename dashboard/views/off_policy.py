"""Off-policy estimates with intervals and overlap diagnostics, next to each policy's true value."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run, table
from dashboard.views.common import absent, url_selectbox
from pipeline import layout
from pipeline.evaluation import TRUE_SLATE_CTR
from pipeline.offpolicy import OBSERVED_SLATE, SLATE_ESTIMATORS

TITLE = "Off-policy vs truth"
SLATE_VIEW = "slate: every slot of the log's impressions"
LIST_VIEW = "first item and top-k list (top slot's rows)"
DIAGNOSTICS = ["matched_events", "effective_sample_size", "max_weight_share", "mean_weight", "mean_weight_low",
               "mean_weight_high", "effective_clicks", "unsupported_share"]


def render(run: Run, runs: list[Run]) -> None:
    if not run.has_table(layout.OFF_POLICY):
        absent("Off-policy estimation", run)
        return
    pooled = run.has_table(layout.OFF_POLICY_POOLED)  # runs before it: per-fold rows, averaged below
    estimates = table(run, layout.OFF_POLICY_POOLED if pooled else layout.OFF_POLICY)
    slate = estimates["estimator"].isin([*SLATE_ESTIMATORS, OBSERVED_SLATE])
    truth_metric, what = "true_ctr", "value of the top-{k} list"
    if slate.any():  # a slate log: the slate estimators (every slot) apart from the top-slot list estimators
        estimand = url_selectbox("estimand", [SLATE_VIEW, LIST_VIEW], SLATE_VIEW, key="ope_estimand")
        estimates = estimates[slate if estimand == SLATE_VIEW else ~slate]
        if estimand == SLATE_VIEW:
            truth_metric, what = TRUE_SLATE_CTR, "clicks per slot of the top-{k} list in the log's impressions"
    k_values = sorted(estimates["k"].unique())
    k = url_selectbox("list length k (1: the first item)", k_values, k_values[-1], key="ope_k")
    at_k = estimates[estimates["k"] == k]
    diagnostics = [c for c in DIAGNOSTICS if c in at_k]  # runs before the mean-weight check lack its columns
    per_policy = at_k.groupby(["policy", "estimator"], sort=False)[["value", "low", "high"] + diagnostics].mean()
    per_policy["reliable"] = at_k.groupby(["policy", "estimator"], sort=False)["reliable"].all()
    per_policy["flag"] = at_k.groupby(["policy", "estimator"], sort=False)["flag"].first()
    per_policy = per_policy.reset_index()
    metrics = table(run, layout.METRICS)
    truth = metrics[(metrics["metric"] == truth_metric) & (metrics["k"] == k)].groupby("policy")["value"].mean()
    chart = alt.Chart(per_policy).encode(y=alt.Y("policy:N", title=None),
                                         color=alt.Color("estimator:N", scale=alt.Scale(scheme="tableau10")),
                                         yOffset="estimator:N")
    layers = (chart.mark_rule().encode(x=alt.X("low:Q", title=what.format(k=k)), x2="high:Q")
              + chart.mark_point(filled=True).encode(x="value:Q", shape=alt.Shape("reliable:N"),
                                                     tooltip=["policy", "estimator", "value", "low", "high",
                                                              *[c for c in ("effective_sample_size", "mean_weight")
                                                                if c in diagnostics], "flag"]))
    if len(truth):
        truth_frame = truth.rename("truth").reset_index()
        layers += alt.Chart(truth_frame).mark_tick(color="black", thickness=3).encode(y="policy:N", x="truth:Q")
        per_policy = per_policy.merge(truth_frame, on="policy", how="left")
    st.caption("Mean over seeds and folds, with the pooled 95% interval (the decision's). " + ("Black ticks: the true value from the click model. " if len(truth)
                                                else "") + "Hollow or open marks: flagged unreliable by the overlap "
               "diagnostics (see flag). The logging policy's row is its observed click rate on its own log.")
    st.altair_chart(layers.properties(height=max(300, 28 * per_policy["policy"].nunique())), width="stretch")
    st.dataframe(per_policy.round(4), width="stretch", hide_index=True)
    if run.has_table(layout.OFF_POLICY_SUMMARY):
        st.subheader("Against the truth: bias, RMSE, interval coverage")
        summary = table(run, layout.OFF_POLICY_SUMMARY)
        summary = summary[(summary["k"] == k) & summary["estimator"].isin(set(at_k["estimator"]))]
        st.dataframe(summary.round(4), width="stretch", hide_index=True)
    if run.has_table(layout.LOGGING_MODEL):
        st.subheader("Estimated logging policy (propensity: estimate)")
        st.dataframe(table(run, layout.LOGGING_MODEL).round(4), width="stretch", hide_index=True)
