"""Policies from outside: evaluate a policy the user runs elsewhere from its action probabilities on the log.

The user gives, for every logged test event, the probability that the policy would have shown each item in
each slot (``evaluation.external_policies.NAME.file``; Open Bandit Pipeline's ``action_dist``, one row per
(event, item[, position])):

- ``row``: the logged event, as the data row of the interactions file (row 1 = first data row; with separate
  ``train``/``test`` files, the row of the test file);
- the item column (named as in the interactions file, ``data.files.columns.item_id``);
- ``position`` (optional, 0 = first slot): the slot the probability is for; without it, the first slot only;
- ``probability`` (``rule: probabilities``), or ``score`` turned into probabilities by ``rule: argmax``
  (ties share) or ``rule: softmax`` (``exp(score / temperature)``, normalised).

Probabilities of an (event, position) must sum to 1.  What is estimated:

- on a one-item log, the policy's first item and its top-k list (the slot average ``mu_k`` of positions
  0..k-1, as for the policies run here); without positions up to k-1 it has a first-item estimate only, and the
  decision says it is missing;
- on a slate log, the top slot's rows give the same first-item and list estimates, and every row is weighted by
  the probability the file gives its logged item *at the row's own slot* (``external_slate_terms``), which is
  OBP's IPW with a ``position`` (``action_dist[i, a_i, position_i] / pscore_i``): the slate estimators that need
  only slot probabilities (IIPS and SN-IIPS, and PI under uniform logging) estimate its clicks per slot.  SIPS
  and RIPS need whole-slate and prefix probabilities, which per-slot marginals do not determine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ExternalPolicyConfig, OffPolicyConfig
from pipeline.data.dataset import CONTEXT_ID, EVENT_ID, ITEM_ID, Dataset
from pipeline.data.files import read_table, row_label
from pipeline.errors import DataError, examples
from pipeline.offpolicy.evaluate import LoggedTestEvents, policy_estimates
from pipeline.offpolicy.slate import LoggedSlates, SlateTerms, slate_estimates
from pipeline.uncertainty import Bootstrap
from pipeline.offpolicy.target import TargetTerms

SUM_TOLERANCE = 1e-3


def load_external_policy(name: str, config: ExternalPolicyConfig, dataset: Dataset, item_column: str) -> pd.DataFrame:
    """``event_id, item_id, position, probability`` rows of one external policy, validated against the data."""
    key = f"evaluation.external_policies.{name}.file"
    frame = read_table(Path(config.file), key)
    value_column = "probability" if config.rule == "probabilities" else "score"
    for column in ("row", item_column, value_column):
        if column not in frame.columns:
            raise DataError(f"{key}: {config.file} has no column {column!r} (rule: {config.rule} needs row, "
                            f"{item_column} and {value_column}); found columns: {', '.join(map(str, frame.columns))}")
    values = pd.to_numeric(frame[value_column], errors="coerce")
    bad = frame[values.isna() | ~np.isfinite(values) | ((values < 0) | (values > 1) if value_column == "probability"
                                                        else False)]
    if len(bad):
        what = "probabilities in [0, 1]" if value_column == "probability" else "finite numbers"
        raise DataError(f"{key}: column {value_column!r} of {config.file} must hold {what}; {row_label(bad.index[0])} "
                        f"holds {_shown(bad[value_column].iloc[0])} ({len(bad)} such row(s))")
    rows = pd.to_numeric(frame["row"], errors="coerce")
    offset = dataset.first_row_event
    n_rows = dataset.file_rows if dataset.file_rows is not None else len(dataset.interactions) - offset
    wrong = frame[rows.isna() | (rows < 1) | (rows > n_rows) | (rows % 1 != 0)]
    if len(wrong):
        raise DataError(f"{key}: column 'row' of {config.file} must name data rows 1 to {n_rows} of "
                        f"{dataset.source('interactions')}; {row_label(wrong.index[0])} holds "
                        f"{_shown(wrong['row'].iloc[0])}")
    items = frame[item_column]
    catalog = (dataset.items if dataset.items is not None else dataset.interactions)[ITEM_ID]
    unknown = items[~items.isin(catalog)]
    if len(unknown):
        raise DataError(f"{key}: {len(unknown)} row(s) of {config.file} name items that are not in the catalog, "
                        f"e.g. {examples(unknown)} ({row_label(unknown.index[0])})")
    positions = pd.to_numeric(frame["position"], errors="coerce") if "position" in frame.columns else pd.Series(
        0, index=frame.index)
    if positions.isna().any() or (positions < 0).any():
        bad_position = frame.index[positions.isna() | (positions < 0)][0]
        raise DataError(f"{key}: column 'position' of {config.file} must hold 0, 1, ... ({row_label(bad_position)})")
    out = pd.DataFrame({EVENT_ID: (rows.astype(int) - 1 + offset).to_numpy(),  # event ids are the rows as read
                        ITEM_ID: items.to_numpy(), "position": positions.astype(int).to_numpy(),
                        "value": values.to_numpy(), "row": rows.astype(int).to_numpy()})
    out["probability"] = _probabilities(out, config)
    sums = out.groupby([EVENT_ID, "position"])["probability"].sum()
    off = sums[(sums - 1).abs() > SUM_TOLERANCE]
    if len(off):
        event, position = off.index[0]
        row = out.loc[out[EVENT_ID] == event, "row"].iloc[0]
        raise DataError(f"{key}: the probabilities of an event's slot must sum to 1; those of row {row} (position "
                        f"{position}) sum to {off.iloc[0]:.6g} ({len(off)} such (row, position) pair(s))")
    return out[[EVENT_ID, ITEM_ID, "position", "probability"]]


def _shown(value) -> str:
    """A cell's value for a message: plain (``2.5``, not ``np.float64(2.5)``), or that the cell is empty."""
    return "an empty cell" if pd.isna(value) else examples([value])


def _probabilities(frame: pd.DataFrame, config: ExternalPolicyConfig) -> np.ndarray:
    groups = frame.groupby([EVENT_ID, "position"])["value"]
    if config.rule == "probabilities":
        return frame["value"].to_numpy()
    if config.rule == "argmax":
        best = (frame["value"] == groups.transform("max")).astype(float)
        return (best / best.groupby([frame[EVENT_ID], frame["position"]]).transform("sum")).to_numpy()
    scaled = frame["value"] / config.temperature
    exp = np.exp(scaled - scaled.groupby([frame[EVENT_ID], frame["position"]]).transform("max"))
    return (exp / exp.groupby([frame[EVENT_ID], frame["position"]]).transform("sum")).to_numpy()


def external_target_terms(probabilities: pd.DataFrame, test: pd.DataFrame, ks: list[int], reward_model,
                          logged_items: set, name: str, source: str, first_row_event: int = 0
                          ) -> dict[int, TargetTerms]:
    """``TargetTerms`` at each k the file's positions allow (``test``: ``event_id, context_id, item_id`` rows;
    ``first_row_event``: the event id of the file's row 1, for messages)."""
    rows = probabilities[probabilities[EVENT_ID].isin(test[EVENT_ID])]
    missing = test.loc[~test[EVENT_ID].isin(rows[EVENT_ID]), EVENT_ID]
    if len(missing):
        raise DataError(f"evaluation.external_policies.{name}.file: {source} gives no probabilities for "
                        f"{len(missing)} of the {len(test)} test events of this fold, e.g. rows "
                        f"{examples(missing + 1 - first_row_event)}; every test event needs its action probabilities")
    context_of = pd.Series(test[CONTEXT_ID].to_numpy(), index=test[EVENT_ID].to_numpy())
    out = {}
    for k in ks:
        if rows["position"].max() < k - 1:
            continue  # the file does not say what the policy shows in slot k - 1
        slot = rows[rows["position"] < k].groupby([EVENT_ID, ITEM_ID], sort=False)["probability"].sum().div(k)
        mu = slot.rename("mu").reset_index()
        mu["r_hat"] = reward_model.predict(context_of.loc[mu[EVENT_ID]].to_numpy(), mu[ITEM_ID].to_numpy())
        mu["unsupported"] = ~mu[ITEM_ID].isin(logged_items)
        per_event = mu.assign(direct=mu["mu"] * mu["r_hat"],
                              off=mu["mu"] * mu["unsupported"]).groupby(EVENT_ID)[["direct", "off"]].sum()
        at_logged = test[[EVENT_ID, ITEM_ID]].merge(mu[[EVENT_ID, ITEM_ID, "mu"]], on=[EVENT_ID, ITEM_ID], how="left")
        events = per_event.reindex(test[EVENT_ID].to_numpy())
        out[k] = TargetTerms(k, at_logged["mu"].fillna(0.0).to_numpy(), events["direct"].to_numpy(),
                             events["off"].to_numpy(),
                             f"action probabilities from {source}")
    return out


def external_slate_terms(probabilities: pd.DataFrame, test: pd.DataFrame, slots: np.ndarray, logged_items: set,
                         name: str, source: str, first_row_event: int = 0) -> SlateTerms:
    """The external policy's ``SlateTerms`` on a slate log's test rows (``test``: ``event_id, item_id`` rows;
    ``slots``: their 0-based slots): each row's item at its own slot, anywhere in the list (the sum over the
    file's positions below the log's slots) and the slot's mass on items the log never shows."""
    n_slots = int(slots.max()) + 1 if len(slots) else 0
    rows = probabilities[probabilities[EVENT_ID].isin(test[EVENT_ID]) & (probabilities["position"] < n_slots)]
    slot_of = pd.Series(slots, index=test[EVENT_ID].to_numpy())
    covered = rows[rows["position"].to_numpy() == slot_of.reindex(rows[EVENT_ID]).to_numpy()]
    missing = test.loc[~test[EVENT_ID].isin(covered[EVENT_ID]), EVENT_ID]
    if len(missing):
        raise DataError(f"evaluation.external_policies.{name}.file: {source} gives no probabilities at their own slot "
                        f"(position = the row's position - 1) for {len(missing)} of the {len(test)} test rows of this "
                        f"fold, e.g. rows {examples(missing + 1 - first_row_event)}; on a slate log every test row "
                        "needs the policy's probabilities at its slot")
    keys = [EVENT_ID, ITEM_ID]
    at_slot = test[keys].merge(covered[keys + ["probability"]], on=keys, how="left")["probability"]
    listed = test[keys].merge(rows.groupby(keys, as_index=False)["probability"].sum(), on=keys, how="left")
    off = covered.assign(off=covered["probability"] * ~covered[ITEM_ID].isin(logged_items)).groupby(EVENT_ID)["off"]
    return SlateTerms(at_slot.fillna(0.0).to_numpy(), off.sum().reindex(test[EVENT_ID]).fillna(0.0).to_numpy(),
                      listed["probability"].fillna(0.0).to_numpy(), f"slot probabilities from {source}")


def external_estimates(name: str, probabilities: pd.DataFrame, test: pd.DataFrame, logged: LoggedTestEvents,
                       slates: LoggedSlates | None, top_slot: np.ndarray | None, ks: list[int],
                       settings: OffPolicyConfig, n_items: int, bootstrap: Bootstrap | None, fold: int, source: str,
                       first_row_event: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every estimate of one external policy on one fold (``test``: the fold's ``event_id, context_id, item_id``
    test rows; ``top_slot``: on a slate log, the mask of the rows the one-item estimators read)."""
    listed_rows = test if top_slot is None else test[top_slot].reset_index(drop=True)
    targets = external_target_terms(probabilities, listed_rows, ks, logged.reward_model, logged.logged_items, name,
                                    source, first_row_event)
    rows, draws = policy_estimates(targets, logged, settings, n_items, bootstrap, name, fold)
    if slates is None:
        return rows, draws
    terms = external_slate_terms(probabilities, test, slates.slot, slates.logged_items, name, source, first_row_event)
    slate_rows, slate_draws = slate_estimates(terms, slates, settings, bootstrap, name, fold)
    return pd.concat([rows, slate_rows], ignore_index=True), {**draws, **slate_draws}
