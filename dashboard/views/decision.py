"""Decision: which policy to ship, on which metric, with what confidence (``decision.json``, ``decision.csv``)."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.data import Run, RunDataError
from pipeline import layout

TITLE = "Decision"


def load_decision(run: Run) -> dict:
    path = run.file(layout.DECISION_JSON)
    if not path.is_file():
        raise RunDataError(f"decision.json is not in run {run.name} (runs made before the decision report have none)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunDataError(f"decision.json of run {run.name} cannot be read: {error}") from None


def render(run: Run, runs: list[Run]) -> None:
    decision = load_decision(run)
    verdict, chosen = decision.get("verdict"), decision.get("policy")
    headline = decision.get("headline") or (f"ship {chosen}" if chosen else "no decision")  # runs before verdicts
    headline = headline[:1].upper() + headline[1:]
    if verdict == "ship" or (verdict is None and chosen):
        st.success(f"**{headline}**")
    elif verdict in ("tie", "keep_baseline"):
        st.info(f"**{headline}**")
    else:
        st.warning("**No decision**: these data do not support choosing a policy.")
    st.markdown(f"**Metric** `{decision.get('metric') or 'none'}`: {decision.get('metric_reason', '')}")
    choice = decision.get("estimator_choice")
    if choice:
        st.markdown(f"**Estimator** `{choice.get('estimator') or 'none'}`: {choice.get('reason', '')}")
    st.markdown(f"**Why** {decision.get('reason', '')}")
    for note in decision.get("notes") or []:
        st.caption(f"decision note: {note}")
    if decision.get("metric_kind") == "replay":
        st.warning("This decision rests on a replay metric: it is unbiased only if the log was collected uniformly "
                   "at random. Add the logging propensities to the data for off-policy estimates.")
    for note in run.info.get("notes") or []:
        st.caption(f"note: {note}")
    policies = pd.DataFrame(decision.get("policies") or [])
    if policies.empty or "value" not in policies:
        return
    policies = policies.sort_values("value", ascending=False)
    baseline = decision.get("baseline")
    shown = pd.DataFrame({
        "policy": policies["policy"],
        "value [95%]": [f"{r.value:.4f} [{r.low:.4f}, {r.high:.4f}]" for r in policies.itertuples()],
        "vs leader [95%]": [_difference(r, "diff_to_leader") for _, r in policies.iterrows()],
        "P(best)": policies["p_best"].round(3),
        "expected loss": policies["expected_loss"].round(4),
        "reliable": policies["reliable"].map({True: "yes", False: "NO"}),
    })
    if "not_worse_than_any" in policies:
        shown.insert(5, "not significantly worse than any", policies["not_worse_than_any"].map({True: "yes", False: "no"}))
    if "diff_to_baseline" in policies:
        shown.insert(3, f"vs {baseline} [95%]", [_difference(r, "diff_to_baseline") for _, r in policies.iterrows()])
    st.dataframe(shown, hide_index=True, width="stretch")
    st.caption("Differences are paired: every policy is scored on the same bootstrap resamples of the test contexts. "
               "P(best) is the share of resamples in which a policy is the highest; expected loss is what choosing "
               "it costs on average against the best of each resample.")
    if decision.get("minimum_detectable_difference") is not None:
        events = decision.get("events_to_separate_top_two")
        users = decision.get("ab_users_per_arm_to_separate_top_two")
        st.markdown(
            f"**Data size** {decision['n_test_events']:,} test events. Smallest difference this run can detect "
            f"(80% power): {decision['minimum_detectable_difference']:.4f}; the top two "
            f"({decision['leader']} and {decision['runner_up']}) differ by {decision['top_two_difference']:.4f}"
            + (f"; separating them would take about {events:,} logged test events or an A/B test with {users:,} "
               "users per arm." if events else "."))
    chart = alt.Chart(policies).encode(y=alt.Y("policy:N", sort="-x", title=None))
    interval = chart.mark_rule().encode(x=alt.X("low:Q", title=decision.get("metric")), x2="high:Q")
    column = "not_worse_than_any" if "not_worse_than_any" in policies else "contender"
    points = chart.mark_point(filled=True).encode(x="value:Q", color=alt.Color(f"{column}:N",
                                                                                title="not worse than any"),
                                                  tooltip=["policy", "value", "low", "high", "p_best"])
    st.altair_chart(interval + points, width="stretch")


def _difference(row: pd.Series, name: str) -> str:
    return f"{row[name]:+.4f} [{row[name + '_low']:+.4f}, {row[name + '_high']:+.4f}]"
