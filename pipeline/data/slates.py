"""Checks of a slate log: rows that are (impression, slot) pairs, with a ``position`` column.

Without ``slate_id`` each row stands alone (the Open Bandit Dataset's sample: a random subset of the
(impression, slot) rows), and only the per-slot estimators apply.  With ``slate_id`` the rows of one impression
are grouped: every impression must show each slot ``1..L`` once with distinct items to one user, and its
``slate_propensity`` (one value per impression) and ``cascade_propensity`` (shrinking along the slots, equal
to ``propensity`` at slot 1 and to ``slate_propensity`` at slot L) must agree with each other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.dataset import (CASCADE_PROPENSITY, ITEM_ID, POSITION, PROPENSITY, SLATE_ID, SLATE_PROPENSITY,
                                   USER_ID)
from pipeline.errors import DataError, examples

AGREEMENT = 1e-3  # relative tolerance between probabilities the user's file states twice (rounded values)


def check_slates(frame: pd.DataFrame, origin: str, names, test_mask: np.ndarray | None) -> pd.DataFrame:
    """The interactions with ``position`` as integers and ``slate_id`` as integer codes; a ``DataError`` for
    anything a slate estimator could not rely on.  ``names``: the ``ColumnNames`` (for the messages)."""
    present = [c for c in (SLATE_ID, SLATE_PROPENSITY, CASCADE_PROPENSITY) if c in frame.columns]
    if POSITION not in frame.columns:
        if present:
            raise DataError(f"{origin}: column {getattr(names, present[0])!r} (data.files.columns.{present[0]}) "
                            f"describes slates, which need a position column ({names.position!r}, "
                            "data.files.columns.position: the slot of each row, 1 = top)")
        return frame
    frame = frame.copy()
    frame[POSITION] = _positions(frame[POSITION], origin, names.position)
    for column in (SLATE_PROPENSITY, CASCADE_PROPENSITY):
        if column in frame.columns and SLATE_ID not in frame.columns:
            raise DataError(f"{origin}: column {getattr(names, column)!r} (data.files.columns.{column}) needs the rows "
                            f"of each impression grouped by a slate_id column ({names.slate_id!r})")
    if SLATE_ID not in frame.columns:
        return frame
    _check_grouped(frame, origin, names, test_mask)
    frame[SLATE_ID] = pd.factorize(frame[SLATE_ID])[0]
    return frame


def _positions(values: pd.Series, origin: str, column: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | (numeric < 1) | (numeric != np.round(numeric))]
    if len(bad):
        first = int(np.flatnonzero(values.index.isin(bad.index))[0])
        raise DataError(f"{origin}: column {column!r} (data.files.columns.position) holds each row's slot as a whole "
                        f"number, 1 = top; found {len(bad)} other value(s), e.g. {examples(bad)} (first at row "
                        f"{first + 1})")
    return numeric.astype(np.int64)


def _check_grouped(frame: pd.DataFrame, origin: str, names, test_mask: np.ndarray | None) -> None:
    slate_column = names.slate_id
    if frame[SLATE_ID].isna().any():
        first = int(np.flatnonzero(frame[SLATE_ID].isna().to_numpy())[0])
        raise DataError(f"{origin}: column {slate_column!r} (data.files.columns.slate_id) is empty at row {first + 1}; "
                        "every row needs the id of its impression")
    # Every check is a vectorised per-impression aggregate broadcast to its rows (a Python function per
    # impression took 53 s for 100k impressions).
    groups = frame.groupby(SLATE_ID, sort=False)
    n_slots = int(frame[POSITION].max())

    def in_impression(rows: pd.Series) -> pd.Series:
        """Whether any row of each row's impression is marked."""
        return rows.groupby(frame[SLATE_ID], sort=False).transform("any")

    wrong = (groups[POSITION].transform("size") != n_slots) | in_impression(
        frame.duplicated([SLATE_ID, POSITION], keep=False))
    _refuse(frame, wrong, origin, slate_column,
            f"every impression must have one row for each position 1..{n_slots} (the largest position in the file)")
    _refuse(frame, in_impression(frame.duplicated([SLATE_ID, ITEM_ID], keep=False)), origin, slate_column,
            f"an impression shows each item once (column {names.item_id!r} repeats within it)")
    _refuse(frame, groups[USER_ID].transform("nunique") > 1, origin, slate_column,
            f"the rows of an impression belong to one user (column {names.user_id!r} differs within it)")
    if test_mask is not None:
        in_test = pd.Series(test_mask, index=frame.index)
        _refuse(frame, in_test.groupby(frame[SLATE_ID], sort=False).transform("nunique") > 1, origin,
                slate_column, "an impression lies in one file (it has rows in both data.files.train and .test)")
    if SLATE_PROPENSITY in frame.columns:
        _check_probability(frame[SLATE_PROPENSITY], origin, names.slate_propensity)
        highest = groups[SLATE_PROPENSITY].transform("max")
        spread = highest - groups[SLATE_PROPENSITY].transform("min") > AGREEMENT * highest
        _refuse(frame, spread, origin, slate_column,
                f"column {names.slate_propensity!r} is the probability of the whole slate: one value per impression")
    if CASCADE_PROPENSITY in frame.columns:
        _check_probability(frame[CASCADE_PROPENSITY], origin, names.cascade_propensity)
        ordered = frame.sort_values([SLATE_ID, POSITION], kind="stable")
        growing = ordered.groupby(SLATE_ID, sort=False)[CASCADE_PROPENSITY].diff() > AGREEMENT * ordered[
            CASCADE_PROPENSITY]
        _refuse(frame, frame.index.isin(ordered.index[growing]), origin, names.cascade_propensity,
                "the probability of slots 1..k cannot grow with k", group=False)
        top = frame[POSITION] == 1
        if PROPENSITY in frame.columns:
            _refuse(frame, top & ~_close(frame[CASCADE_PROPENSITY], frame[PROPENSITY]), origin,
                    names.cascade_propensity, f"at position 1 it must equal {names.propensity!r} (both are the "
                    "probability of the top item)", group=False)
        if SLATE_PROPENSITY in frame.columns:
            last = frame[POSITION] == n_slots
            _refuse(frame, last & ~_close(frame[CASCADE_PROPENSITY], frame[SLATE_PROPENSITY]), origin,
                    names.cascade_propensity, f"at the last position it must equal {names.slate_propensity!r} (both "
                    "are the probability of the whole slate)", group=False)


def _check_probability(values: pd.Series, origin: str, column: str) -> None:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | (numeric <= 0) | (numeric > 1)]
    if len(bad):
        raise DataError(f"{origin}: column {column!r} holds logging probabilities, which must be in (0, 1]; found "
                        f"{len(bad)} other value(s), e.g. {examples(bad)}")


def _close(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a - b).abs() <= AGREEMENT * np.maximum(a.abs(), b.abs())


def _refuse(frame: pd.DataFrame, wrong, origin: str, column: str, rule: str, group: bool = True) -> None:
    wrong = np.asarray(wrong, dtype=bool)
    if not wrong.any():
        return
    first = int(np.flatnonzero(wrong)[0])
    if group:
        raise DataError(f"{origin}: {rule}; {int(frame[SLATE_ID][wrong].nunique())} impression(s) break it, e.g. "
                        f"{column} {examples(frame[SLATE_ID].iloc[[first]])} (row {first + 1})")
    raise DataError(f"{origin}: column {column!r}: {rule}; {int(wrong.sum())} row(s) break it, first at row "
                    f"{first + 1}")
