"""Items: a 2-D map of the item vectors coloured by category, and how often each policy shows each item."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.data import Run, table
from pipeline import layout
from dashboard.views.common import absent, choose

TITLE = "Items"


def render(run: Run, runs: list[Run]) -> None:
    exposure = table(run, layout.ITEM_EXPOSURE)
    seed = choose("seed", exposure["seed"])
    exposure = exposure[exposure["seed"] == seed]
    if run.has_table(layout.item_map(seed)):
        item_map = table(run, layout.item_map(seed))
        colour = "category:N" if "category" in item_map else alt.value("steelblue")
        tooltip = [c for c in ("item_id", "name", "category", "price") if c in item_map]
        st.subheader("Item vectors (PCA of TextWiser and attribute features)")
        st.altair_chart(alt.Chart(item_map).mark_circle(size=60).encode(x="x:Q", y="y:Q", color=colour, tooltip=tooltip),
                        width="stretch")
    else:
        absent("An item map (the data has no item features)", run)
    policy = st.selectbox("policy", sorted(exposure["policy"].unique()))
    shown = exposure[exposure["policy"] == policy].sort_values("shown", ascending=False)
    k = int(shown["k"].iloc[0]) if len(shown) else 0
    st.subheader(f"How often {policy} shows each item in its top-{k} lists")
    st.altair_chart(alt.Chart(shown.head(50)).mark_bar().encode(x=alt.X("item_id:N", sort="-y"), y="shown:Q"),
                    width="stretch")
    total = exposure.groupby("policy")["item_id"].nunique().rename("distinct items shown").reset_index()
    st.dataframe(total, hide_index=True, width="stretch")
    st.dataframe(shown.head(20), hide_index=True, width="stretch")
