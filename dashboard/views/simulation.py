"""Online simulation: cumulative regret and rolling CTR over time, the market shock marked."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run, table
from dashboard.views.common import absent, choose

TITLE = "Online simulation"


def render(run: Run, runs: list[Run]) -> None:
    if not run.has("simulation.parquet"):
        absent("An online simulation", run)
        return
    curves = table(run, "simulation")
    seed = choose("seed", curves["seed"])
    curves = curves[curves["seed"] == seed]
    shock = curves["shock_step"].dropna()
    for column, title in (("cum_regret", "cumulative expected regret"), ("rolling_ctr", "rolling CTR")):
        chart = alt.Chart(curves).mark_line().encode(x=alt.X("step:Q"), y=alt.Y(f"{column}:Q", title=title),
                                                     color="policy:N", tooltip=["policy", "step", column])
        if len(shock):
            rule = alt.Chart(shock.head(1).to_frame("shock_step")).mark_rule(color="red", strokeDash=[6, 4])
            chart += rule.encode(x="shock_step:Q")
        st.altair_chart(chart, width="stretch")
    if len(shock):
        st.caption(f"Red dashed line: the market shock at step {int(shock.iloc[0])}.")
    summary = table(run, "simulation_summary")
    st.dataframe(summary[summary["seed"] == seed].round(4), width="stretch", hide_index=True)
