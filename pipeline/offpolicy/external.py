"""Policies from outside: evaluate a policy the user runs elsewhere from its action probabilities on the log.

As Open Bandit Pipeline evaluates an action distribution, the user gives, for every logged test event, the
probability that the policy would have shown each item (``evaluation.external_policies.NAME.file``), one row
per (event, item[, position]):

- ``row``: the logged event, as the data row of the interactions file (row 1 = first data row; with separate
  ``train``/``test`` files, the row of the test file);
- the item column (named as in the interactions file, ``data.files.columns.item_id``);
- ``position`` (optional, 0 = first slot): the slot the probability is for; without it, the first slot only;
- ``probability`` (``rule: probabilities``), or ``score`` turned into probabilities by ``rule: argmax``
  (ties share) or ``rule: softmax`` (``exp(score / temperature)``, normalised).

Probabilities of an (event, position) must sum to 1.  The top-k list's value needs positions 0..k-1 (the slot
average ``mu_k``); with fewer, the policy has a first-item estimate only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ExternalPolicyConfig
from pipeline.data.dataset import CONTEXT_ID, EVENT_ID, ITEM_ID, Dataset
from pipeline.data.files import read_table, row_label
from pipeline.errors import DataError, examples
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
    offset = first_row_event(dataset)
    n_rows = len(dataset.interactions) - offset
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
    out = pd.DataFrame({EVENT_ID: dataset.interactions[EVENT_ID].to_numpy()[(rows.astype(int) - 1 + offset).to_numpy()],
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


def first_row_event(dataset: Dataset) -> int:
    """The event id of row 1 of the file users count rows in (the test file when train and test are separate)."""
    return 0 if dataset.test_mask is None else int((~dataset.test_mask).sum())


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
        per_event = mu.assign(direct=mu["mu"] * mu["r_hat"], square=mu["mu"] ** 2,
                              off=mu["mu"] * mu["unsupported"]).groupby(EVENT_ID)[["direct", "square", "off"]].sum()
        at_logged = test[[EVENT_ID, ITEM_ID]].merge(mu[[EVENT_ID, ITEM_ID, "mu"]], on=[EVENT_ID, ITEM_ID], how="left")
        events = per_event.reindex(test[EVENT_ID].to_numpy())
        out[k] = TargetTerms(k, at_logged["mu"].fillna(0.0).to_numpy(), events["direct"].to_numpy(),
                             events["square"].to_numpy(), events["off"].to_numpy(),
                             f"action probabilities from {source}")
    return out
