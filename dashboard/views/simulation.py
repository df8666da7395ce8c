"""Online learning: the simulation's regret and rolling CTR (shock marked), and replay with learning from the log."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run, table
from pipeline import layout
from dashboard.views.common import absent, choose

TITLE = "Online simulation"


def render(run: Run, runs: list[Run]) -> None:
    if run.has_table(layout.REPLAY):
        replay_section(run)
    if not run.has_table(layout.SIMULATION):
        absent("An online simulation", run)
        return
    curves = table(run, layout.SIMULATION)
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
    summary = table(run, layout.SIMULATION_SUMMARY)
    st.dataframe(summary[summary["seed"] == seed].round(4), width="stretch", hide_index=True)


def replay_section(run: Run) -> None:
    """Each policy's running CTR over the log events it was credited with (replay with learning), with intervals."""
    st.subheader("Replay with learning (from the logged test events)")
    curves = table(run, layout.REPLAY)
    seed = choose("replay seed", curves["seed"])
    curves = curves[curves["seed"] == seed]
    base = alt.Chart(curves).encode(x=alt.X("accepted:Q", title="accepted events (the policy's own steps)"),
                                    color=alt.Color("policy:N", scale=alt.Scale(scheme="tableau10")))
    band = base.mark_area(opacity=0.12).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("ctr:Q", title="running CTR"),
                                             tooltip=["policy", "fold", "accepted", "events_seen", "ctr", "low", "high"])
    st.altair_chart(band + line, width="stretch")
    st.caption("An event counts when the policy, as trained so far, picks the logged item (and, under non-uniform "
               "logging, passes rejection sampling); the policy learns from it. Bands: 95% Wilson intervals.")
