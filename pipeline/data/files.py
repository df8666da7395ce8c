"""Bring-your-own data: interactions in Mab2Rec's layout plus optional user and item tables.

Files may be CSV or Parquet.  Every check that can fail on a user's data runs here, once, and raises a
``DataError`` naming the file, the column (and the YAML key that names it) and what was found.  Rows are
counted one way in every message: ``row 1`` is the first data row (the line after a CSV's header).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import FilesConfig
from pipeline.data.dataset import (CASCADE_PROPENSITY, ESTIMATE, EVENT_ID, ITEM_ID, POSITION, PROPENSITY, RESPONSE,
                                   SLATE_ID, SLATE_PROPENSITY, TIMESTAMP, USER_ID, Dataset)
from pipeline.data.slates import check_slates
from pipeline.errors import DataError, examples
from pipeline.rewards import RewardScale, scale_of

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


def row_label(position: int) -> str:
    """The message form of a 0-based row position: ``row 1`` is the first data row."""
    return f"row {position + 1}"


def _rows_not_lines(message: str) -> str:
    """pandas' CSV errors count file lines (the header is line 1); say the data row too."""
    return re.sub(r"\bline (\d+)", lambda m: f"{row_label(int(m.group(1)) - 2)} (line {m.group(1)} of the file)",
                  message)


def read_table(path: Path, key: str) -> pd.DataFrame:
    """Read a CSV or Parquet file; ``key`` is the YAML key that named it (for the error message)."""
    if path.is_dir():
        raise DataError(f"{key}: {path} is a directory; expected a CSV or Parquet file")
    if not path.is_file():
        raise DataError(f"{key}: file {path} does not exist (expected a CSV or Parquet file; relative paths are "
                        f"resolved from the directory you run the pipeline in, {Path.cwd()})")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{key}: {path} has suffix {path.suffix!r}; expected one of {', '.join(READERS)}")
    try:
        frame = reader(path)
    except Exception as error:  # pandas/pyarrow raise many types for unreadable files
        detail = " ".join(_rows_not_lines(str(error)).split())
        raise DataError(f"{key}: could not read {path} as {path.suffix[1:]}: {detail}") from None
    frame.columns = [str(column) for column in frame.columns]
    return frame


def load_files(config: FilesConfig) -> Dataset:
    columns = config.columns
    if config.interactions is not None:
        interactions = _read_interactions(config.interactions, "data.files.interactions", config)
        test_mask, origin = None, str(config.interactions)
    else:
        train = _read_interactions(config.train, "data.files.train", config)
        test = _read_interactions(config.test, "data.files.test", config)
        if test.empty:
            raise DataError(f"data.files.test: {config.test} has no rows; the test split would be empty")
        if list(train.columns) != list(test.columns):
            raise DataError(f"data.files.train and data.files.test have different columns: {list(train.columns)} "
                            f"vs {list(test.columns)}")
        interactions = pd.concat([train, test], ignore_index=True)
        test_mask = np.r_[np.zeros(len(train), bool), np.ones(len(test), bool)]
        origin = f"{config.train} + {config.test}"
    if interactions.empty:
        raise DataError(f"data.files: {origin} has no interaction rows")
    reward = _reward_scale(interactions[RESPONSE], config, origin)
    if reward.binary and not interactions[RESPONSE].any():
        raise DataError(f"data.files: column {config.columns.response!r} (data.files.columns.response) is 0 in all "
                        f"{len(interactions)} rows of {origin}: without a single click (1) no policy can learn and "
                        "no replay metric is defined; check the column and its coding (1 = clicked)")
    if not reward.binary and interactions[RESPONSE].nunique() < 2:
        raise DataError(f"data.files: column {config.columns.response!r} (data.files.columns.response) holds one "
                        f"value in all {len(interactions)} rows of {origin}: no policy can learn from it")
    if not reward.binary and POSITION in interactions.columns:
        raise DataError(f"data.files: column {config.columns.response!r} of {origin} holds {reward.describe()}, but "
                        "this is a slate log (data.files.columns.position): the slate estimators count clicks per "
                        "slot and need 0/1 responses")
    interactions = check_slates(interactions, origin, columns, test_mask)
    interactions.insert(0, EVENT_ID, np.arange(len(interactions)))

    first_row_event = 0 if test_mask is None else int((~test_mask).sum())
    file_rows = len(interactions) - first_row_event
    sources = {"interactions": origin}
    users = items = None
    dropped = {}
    if config.user_features is not None:
        users = _read_keyed_table(config.user_features, "data.files.user_features", columns.user_id, USER_ID)
        hint = _type_hint(interactions[USER_ID].dtype, users[USER_ID].dtype)
        interactions[USER_ID], users[USER_ID] = _aligned_ids(interactions[USER_ID], users[USER_ID])
        known = interactions[USER_ID].isin(users[USER_ID]).to_numpy()
        if config.unknown_users == "drop" and not known.all():
            if not known.any():
                raise DataError(f"data.files.unknown_users is 'drop', but none of the {len(known):,} interactions of "
                                f"{origin} names a user of {config.user_features}; every event would be dropped{hint}")
            dropped["unknown_users"] = int((~known).sum())
            interactions = interactions[known].reset_index(drop=True)
            test_mask = None if test_mask is None else test_mask[known]
            if test_mask is not None and not test_mask.any():
                raise DataError(f"data.files.unknown_users is 'drop', and every event of {config.test} names a user "
                                f"missing from {config.user_features}: the test split would be empty")
        _require_known(interactions, users, USER_ID, columns.user_id, origin, config.user_features, hint)
        sources["users"] = str(config.user_features)
        clash = sorted(set(users.columns) & set(config.event_context))
        if clash:
            raise DataError(f"data.files.event_context: {clash} are also columns of {config.user_features}; "
                            "rename one of them so each feature has one source")
    if config.item_features is not None:
        items = _read_keyed_table(config.item_features, "data.files.item_features", columns.item_id, ITEM_ID)
        hint = _type_hint(interactions[ITEM_ID].dtype, items[ITEM_ID].dtype)
        interactions[ITEM_ID], items[ITEM_ID] = _aligned_ids(interactions[ITEM_ID], items[ITEM_ID])
        _require_known(interactions, items, ITEM_ID, columns.item_id, origin, config.item_features, hint)
        sources["items"] = str(config.item_features)
    return Dataset(interactions=interactions, users=users, items=items, event_context=tuple(config.event_context),
                   sources=sources, test_mask=test_mask, propensity_estimated=columns.propensity == ESTIMATE,
                   reward=reward, dropped=dropped, first_row_event=first_row_event, file_rows=file_rows)


def optional_columns(names) -> tuple[tuple[str, str], ...]:
    """(name in the user's file, canonical name) of every optional interaction column."""
    return ((names.propensity, PROPENSITY), (names.timestamp, TIMESTAMP), (names.position, POSITION),
            (names.slate_id, SLATE_ID), (names.slate_propensity, SLATE_PROPENSITY),
            (names.cascade_propensity, CASCADE_PROPENSITY))


def _read_interactions(path: Path, key: str, config: FilesConfig) -> pd.DataFrame:
    frame = read_table(path, key)
    names = config.columns
    renames = {names.user_id: USER_ID, names.item_id: ITEM_ID, names.response: RESPONSE}
    for optional, canonical in optional_columns(names):
        if canonical == PROPENSITY and optional == ESTIMATE:
            continue  # no column: the runner fits the logging policy (offpolicy.logging_model)
        explicitly_named = canonical in names.model_fields_set
        if optional in frame.columns:
            renames[optional] = canonical
        elif explicitly_named:
            raise DataError(f"{path}: column {optional!r} (data.files.columns.{canonical}) is missing; found columns: "
                            f"{', '.join(map(str, frame.columns))}")
    required = {names.user_id: "user_id", names.item_id: "item_id", names.response: "response"}
    for column, key_name in required.items():
        if column not in frame.columns:
            raise DataError(f"{path}: missing required column {column!r} (data.files.columns.{key_name}); found "
                            f"columns: {', '.join(map(str, frame.columns))}")
    for column in config.event_context:
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} listed in data.files.event_context is missing; found columns: "
                            f"{', '.join(map(str, frame.columns))}")
    frame = frame.rename(columns=renames)
    keep = [USER_ID, ITEM_ID, RESPONSE] + [c for _, c in optional_columns(names) if c in frame.columns]
    if POSITION in frame.columns and names.position in config.event_context:
        raise DataError(f"{path}: column {names.position!r} is both data.files.columns.position (the slot of each "
                        "row of a multi-item impression) and listed in data.files.event_context; a slot is not part "
                        "of the user's context (a policy ranks before it knows the slot): remove it from "
                        "event_context")
    frame = frame[keep + list(config.event_context)].copy()

    for column, label in ((USER_ID, names.user_id), (ITEM_ID, names.item_id)):
        _reject_missing(frame[column], path, label)
        frame[column] = _whole_number_ids(frame[column])
    frame[RESPONSE] = _numeric_response(frame[RESPONSE], path, names.response)
    if PROPENSITY in frame.columns:
        _check_propensity(frame[PROPENSITY], path, names.propensity)
    if TIMESTAMP in frame.columns:
        frame[TIMESTAMP] = _parse_timestamps(frame[TIMESTAMP], path, names.timestamp)
    return frame


def _numeric_response(values: pd.Series, path: Path, column: str) -> pd.Series:
    """0/1 clicks (or true/false) as small integers, any other finite numbers (revenue, ratings) as floats."""
    _reject_missing(values, path, column)
    if values.dtype == bool:
        return values.astype(np.int8)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | ~np.isfinite(numeric.astype(float))]
    if len(bad):
        raise DataError(f"{path}: column {column!r} must hold numbers (0/1 clicks, or real-valued rewards such as "
                        f"revenue); found {len(bad)} other value(s), e.g. {examples(bad)}")
    return numeric.astype(np.int8) if numeric.isin([0, 1]).all() else numeric.astype(float)


def _reward_scale(responses: pd.Series, config: FilesConfig, origin: str) -> RewardScale:
    """The response's scale (``rewards.scale_of``), with the declared range checked against the data."""
    declared = config.reward_range
    if declared is not None:
        outside = responses[(responses < declared[0]) | (responses > declared[1])]
        if len(outside):
            raise DataError(f"data.files: column {config.columns.response!r} of {origin} has {len(outside)} value(s) "
                            f"outside data.files.reward_range [{declared[0]:g}, {declared[1]:g}], e.g. "
                            f"{examples(outside)}")
    return scale_of(responses.to_numpy(), declared)


def _check_propensity(values: pd.Series, path: Path, column: str) -> None:
    _reject_missing(values, path, column)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | (numeric <= 0) | (numeric > 1)]
    if len(bad):
        raise DataError(f"{path}: column {column!r} holds logging propensities, which must be in (0, 1]; found "
                        f"{len(bad)} other value(s), e.g. {examples(bad)}")


def _parse_timestamps(values: pd.Series, path: Path, column: str) -> pd.Series:
    _reject_missing(values, path, column)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values  # numbers (epoch seconds, sequence numbers) order events as they are
    try:
        return pd.to_datetime(values)
    except (ValueError, TypeError, OverflowError):
        parsed = pd.to_datetime(values, errors="coerce")  # the format of the first value, as pandas infers it
        bad = np.flatnonzero(parsed.isna().to_numpy())
        where = (f"; first value not in the format of row 1 ({values.iloc[0]!r}): {values.iloc[bad[0]]!r} at "
                 f"{row_label(int(bad[0]))}") if len(bad) else ""
        raise DataError(f"{path}: column {column!r} should hold timestamps (in one format) or numbers that order "
                        f"events; could not parse it{where}") from None


def _reject_missing(values: pd.Series, path: Path, column: str) -> None:
    missing = int(values.isna().sum())
    if missing:
        first = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{path}: column {column!r} has {missing} missing (NaN) value(s), first at {row_label(first)}; "
                        "expected a value in every row")


def _read_keyed_table(path: Path, key: str, id_column: str, canonical: str) -> pd.DataFrame:
    frame = read_table(path, key)
    if id_column not in frame.columns:
        raise DataError(f"{path}: missing id column {id_column!r} ({key} is keyed by data.files.columns."
                        f"{canonical}); found columns: {', '.join(map(str, frame.columns))}")
    frame = frame.rename(columns={id_column: canonical})
    _reject_missing(frame[canonical], path, id_column)
    frame[canonical] = _whole_number_ids(frame[canonical])
    duplicated = frame[canonical][frame[canonical].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: {id_column!r} must identify one row each; {len(duplicated)} id(s) repeat, e.g. "
                        f"{examples(duplicated)}")
    return frame.reset_index(drop=True)


def _require_known(interactions: pd.DataFrame, table: pd.DataFrame, column: str, label: str, origin: str,
                   table_path: Path, hint: str) -> None:
    ids = interactions[column]
    unknown = pd.unique(ids[~ids.isin(table[column])])
    if len(unknown):
        events = int((~ids.isin(table[column])).sum())
        fix = ("; add their rows, or set data.files.unknown_users: drop to leave their events out (they are counted "
               "in run.json)" if column == USER_ID else "")
        raise DataError(f"{origin}: {len(unknown)} {label!r} value(s) in {events:,} of the {len(ids):,} interactions "
                        f"are missing from {table_path}, e.g. {examples(unknown)}; every {label} needs a row "
                        f"there{fix}{hint}")


def _whole_number_ids(ids: pd.Series) -> pd.Series:
    """Float ids that are whole numbers (Parquet or CSV columns that passed through a float type: 22.0) become
    integers, so they match the same ids written as 22 in another file.  Other ids are kept as they are."""
    if pd.api.types.is_float_dtype(ids) and np.isfinite(ids).all() and (ids == np.round(ids)).all() \
            and (ids.abs() < 2 ** 53).all():
        return ids.astype(np.int64)
    return ids


def _type_hint(logged_dtype, table_dtype) -> str:
    if logged_dtype == table_dtype:
        return ""
    return (f". Ids are compared as text when their types differ: the interactions hold {logged_dtype} ids and the "
            f"table {table_dtype} ids, so e.g. '22.5' or '022' never equals '22'; write the ids the same way in both")


def _aligned_ids(logged: pd.Series, table: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids read as numbers in one file and as strings in another are compared as strings."""
    if logged.dtype == table.dtype:
        return logged, table
    return logged.astype(str), table.astype(str)
