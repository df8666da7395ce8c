"""Sessions and A/B tests (seed 003): learning curves, the session-level comparison over seeds, and the
simulated A/B tests' lift day by day with the sequential test's decision."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.data import Run, table
from dashboard.views.common import absent, choose, with_interval
from pipeline import layout

TITLE = "Sessions and A/B tests"
ROLLING_EPISODES = 100


def render(run: Run, runs: list[Run]) -> None:
    if not run.has_table(layout.SESSIONS_SUMMARY):
        absent("A session comparison (simulation.session_comparison.enabled, configs/sessions.yaml)", run)
        return
    comparison(run)
    curves(run)
    if run.has_table(layout.AB_TESTS):
        ab_tests(run)


def comparison(run: Run) -> None:
    summary = table(run, layout.SESSIONS_SUMMARY)
    per_seed = table(run, layout.SESSIONS_PER_SEED)
    reporting = sorted(per_seed.loc[per_seed["role"] == "reporting", "seed"].unique().tolist())
    tuning = sorted(per_seed.loc[per_seed["role"] == "tuning", "seed"].unique().tolist())
    st.subheader("Return per session, on calendars the agents did not train on")
    st.caption(f"Mean over the reporting seeds {reporting} with 95% t-intervals over seeds; differences paired "
               f"by seed. Tuning seeds (hyperparameters chosen there, not in these figures): {tuning or 'none'}.")
    shown = pd.DataFrame({"agent": summary["agent"]})
    for metric, label in (("return_per_session", "return / session"), ("minus_best_bandit", "minus best bandit"),
                          ("minus_oracle", "minus Oracle"), ("session_length", "length"),
                          ("return_visits_per_user", "return visits / user"), ("diversity", "diversity"),
                          ("novelty", "novelty")):
        shown[label] = [with_interval(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])
                        for _, row in summary.iterrows()]
    st.dataframe(shown, width="stretch", hide_index=True)
    best = summary["best_bandit"].iloc[0]
    st.caption(f"Best bandit (highest mean return per session): {best}. The Oracle is myopic (the highest click "
               "probability now): a session-aware agent may beat it.")
    chart = alt.Chart(per_seed).mark_point(filled=True).encode(
        x=alt.X("return_per_session:Q", title="return per session"), y=alt.Y("agent:N", title=None),
        color="role:N", shape="role:N", tooltip=["seed", "agent", "role", "return_per_session", "sessions"])
    st.altair_chart(chart, width="stretch")


def curves(run: Run) -> None:
    data = table(run, layout.SESSIONS_CURVES)
    if data.empty:
        return
    st.subheader("Learning curves")
    seed = choose("seed", data["seed"])
    data = data[data["seed"] == seed].sort_values(["agent", "step"]).copy()
    data["rolling_return"] = data.groupby("agent")["return"].transform(
        lambda values: values.rolling(ROLLING_EPISODES, min_periods=1).mean())
    chart = alt.Chart(data).mark_line().encode(
        x=alt.X("step:Q", title="training steps"), y=alt.Y("rolling_return:Q", title="return per session"),
        color="agent:N", tooltip=["agent", "step", "rolling_return"])
    st.altair_chart(chart, width="stretch")
    st.caption(f"Mean return of the last {ROLLING_EPISODES} training sessions (bandits learn online from every "
               "step; DQN and PPO through Stable-Baselines3's learn, exploring as they train).")


def ab_tests(run: Run) -> None:
    tests, daily = table(run, layout.AB_TESTS), table(run, layout.AB_DAILY)
    st.subheader("Simulated A/B tests")
    if run.has_table(layout.AB_SUMMARY):
        summary = table(run, layout.AB_SUMMARY)
        st.dataframe(summary.round(3), width="stretch", hide_index=True)
        st.caption("Share of tests declared significant by each rule (A/A: the false-positive rate; A/B: the "
                   "power at the true lift), with its Monte Carlo standard error. The z-test checked every day "
                   "is shown to say why the sequential test (mSPRT) is needed; it is not a valid test.")
    kinds = tests["kind"].unique().tolist()
    kind = choose("test kind", kinds)
    test = choose("test", tests.loc[tests["kind"] == kind, "test"])
    row = tests[(tests["kind"] == kind) & (tests["test"] == test)].iloc[0]
    days = daily[(daily["kind"] == kind) & (daily["test"] == test)]
    base = alt.Chart(days).encode(x=alt.X("day:Q", title="day of the test"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("cs_low:Q", title="lift (clicks per user)"), y2="cs_high:Q")
    line = base.mark_line(point=True).encode(y="lift:Q", tooltip=["day", "n_control", "n_treatment", "lift",
                                                                  "cs_low", "cs_high", "p_always_valid"])
    chart = band + line + alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="gray").encode(y="zero:Q")
    if pd.notna(row["decision_day"]):
        chart += alt.Chart(pd.DataFrame({"day": [row["decision_day"]]})).mark_rule(
            color="red", strokeDash=[6, 4]).encode(x="day:Q")
    st.altair_chart(chart, width="stretch")
    decided = f"decided on day {int(row['decision_day'])}" if pd.notna(row["decision_day"]) else "no decision"
    st.caption(f"{row['treatment']} against {row['control']}: lift {row['lift']:.3f} "
               f"[{row['lift_low']:.3f}, {row['lift_high']:.3f}] at the end; band: the mSPRT's confidence "
               f"sequence (valid every day); red line: its decision ({decided}). Fixed horizon: "
               f"{row['planned_per_arm']} users per arm, reached on day "
               f"{'-' if pd.isna(row['fixed_day']) else int(row['fixed_day'])}.")
