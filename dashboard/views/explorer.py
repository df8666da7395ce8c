"""Recommendations explorer: each policy's top-k for a logged test context, or for a context set by hand.

Logged contexts read the run's saved recommendation lists.  A hand-set context (a user plus the event's
device, daypart and weekend flag) is featurized with the run's saved featurizer and scored by the saved,
already-trained recommenders: nothing is retrained.  On synthetic data every item also shows its true
click probability from the saved click model.
"""

from __future__ import annotations

import joblib
import pandas as pd
import streamlit as st

from dashboard.data import Run, RunDataError, rows, table
from dashboard.views.common import choose
from pipeline import layout
from pipeline.data.synthetic import ClickModel

TITLE = "Recommendations explorer"
ITEM_COLUMNS = ["item_id", "name", "category", "price"]


def render(run: Run, runs: list[Run]) -> None:
    folds = pd.DataFrame(run.info.get("folds") or [])
    if folds.empty:
        raise RunDataError(f"run.json of run {run.name} lists no folds")
    seed = choose("seed", folds["seed"])
    fold = choose("fold", folds.loc[folds["seed"] == seed, "fold"])
    items = _items(run, seed)
    modes = ["a logged test context"]
    if run.has(layout.context_featurizer(seed, fold)) and run.has_table(layout.data_table(seed, "users")):
        modes.append("a context set by hand")
    mode = st.radio("show recommendations for", modes, horizontal=True)
    if mode == modes[0]:
        _logged(run, seed, fold, items)
    else:
        _by_hand(run, seed, fold, items)


def _items(run: Run, seed: int) -> pd.DataFrame | None:
    for name in (layout.item_map(seed), layout.data_table(seed, "items")):
        if run.has_table(name):
            frame = table(run, name)
            return frame[[c for c in ITEM_COLUMNS if c in frame.columns]]
    return None


def _logged(run: Run, seed: int, fold: int, items: pd.DataFrame | None) -> None:
    contexts = rows(run, layout.TEST_CONTEXTS, seed=seed, fold=fold)["context_id"].to_numpy()
    position = st.number_input(f"test context (0 to {len(contexts) - 1})", 0, len(contexts) - 1, 0)
    context = contexts[position]
    st.write(f"context id **{context}**")
    event = None
    if run.has_table(layout.data_table(seed, "interactions")):
        # a context is an event, or an impression of a slate log (its rows share it; the first is shown)
        key = "slate_id" if run.info.get("data", {}).get("slates_grouped") else "event_id"
        event = rows(run, layout.data_table(seed, "interactions"), **{key: context}).head(1)
        users = rows(run, layout.data_table(seed, "users"), user_id=event["user_id"].iloc[0])
        st.dataframe(event.merge(users, on="user_id", how="left"), hide_index=True, width="stretch")
    lists = rows(run, layout.RECOMMENDATIONS, seed=seed, fold=fold, context_id=context)
    truth = _truth(run, seed, event)
    for policy, group in lists.groupby("policy", sort=False):
        _show_list(policy, group[["rank", "item_id", "score"]], items, truth)


def _by_hand(run: Run, seed: int, fold: int, items: pd.DataFrame | None) -> None:
    users = table(run, layout.data_table(seed, "users"))
    event_columns = tuple(run.info.get("data", {}).get("event_context", []))
    logged = table(run, layout.data_table(seed, "interactions"), columns=event_columns)  # only the columns offered
    user_id = st.selectbox("user", users["user_id"].head(500).tolist())
    event = {"user_id": user_id}
    for column in event_columns:
        choices = sorted(logged[column].dropna().unique().tolist())
        event[column] = st.selectbox(column, choices)
    event_frame = pd.DataFrame([event])
    raw = event_frame.merge(users, on="user_id", how="left")
    st.dataframe(raw, hide_index=True, width="stretch")
    featurizer = joblib.load(run.file(layout.context_featurizer(seed, fold)))
    vector = featurizer.transform(raw)
    truth = _truth(run, seed, event_frame)
    folder = run.file(layout.fold_folder(seed, fold))
    for saved in sorted(folder.glob(f"*/{layout.RECOMMENDER}")):
        recommender = joblib.load(saved)
        contextual = recommender.mab.is_contextual
        listed, scores = recommender.recommend(vector if contextual else [[]], return_scores=True)
        frame = pd.DataFrame({"rank": range(len(listed)), "item_id": listed, "score": scores})
        _show_list(saved.parent.name, frame, items, truth)


def _truth(run: Run, seed: int, event: pd.DataFrame | None) -> pd.Series | None:
    path = run.file(layout.click_model(seed))
    if event is None or event.empty or not path.is_file():
        return None
    model = ClickModel.load(path)
    return pd.Series(model.probabilities(event)[0], index=model.item_ids, name="true_click_probability")


def _show_list(policy: str, frame: pd.DataFrame, items: pd.DataFrame | None, truth: pd.Series | None) -> None:
    if items is not None:
        frame = frame.merge(items, on="item_id", how="left")
    if truth is not None:
        frame = frame.assign(true_click_probability=truth.reindex(frame["item_id"]).to_numpy())
    st.markdown(f"**{policy}**")
    st.dataframe(frame.round(4), hide_index=True, width="stretch")
