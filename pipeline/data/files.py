"""Bring-your-own data: interactions in Mab2Rec's layout plus optional user and item tables.

Files may be CSV or Parquet.  Every check that can fail on a user's data runs here, once, and raises a
``DataError`` naming the file, the column (and the YAML key that names it) and what was found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import FilesConfig
from pipeline.data.dataset import EVENT_ID, ITEM_ID, PROPENSITY, RESPONSE, TIMESTAMP, USER_ID, Dataset
from pipeline.errors import DataError, examples

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


def read_table(path: Path, key: str) -> pd.DataFrame:
    """Read a CSV or Parquet file; ``key`` is the YAML key that named it (for the error message)."""
    if not path.is_file():
        raise DataError(f"{key}: file {path} does not exist (expected a CSV or Parquet file; relative paths are "
                        f"resolved from the directory you run the pipeline in, {Path.cwd()})")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{key}: {path} has suffix {path.suffix!r}; expected one of {', '.join(READERS)}")
    try:
        return reader(path)
    except Exception as error:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{key}: could not read {path} as {path.suffix[1:]}: {error}") from None


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
    interactions.insert(0, EVENT_ID, np.arange(len(interactions)))

    sources = {"interactions": origin}
    users = items = None
    if config.user_features is not None:
        users = _read_keyed_table(config.user_features, "data.files.user_features", columns.user_id, USER_ID)
        interactions[USER_ID], users[USER_ID] = _aligned_ids(interactions[USER_ID], users[USER_ID])
        _require_known(interactions, users, USER_ID, columns.user_id, origin, config.user_features)
        sources["users"] = str(config.user_features)
        clash = sorted(set(users.columns) & set(config.event_context))
        if clash:
            raise DataError(f"data.files.event_context: {clash} are also columns of {config.user_features}; "
                            "rename one of them so each feature has one source")
    if config.item_features is not None:
        items = _read_keyed_table(config.item_features, "data.files.item_features", columns.item_id, ITEM_ID)
        interactions[ITEM_ID], items[ITEM_ID] = _aligned_ids(interactions[ITEM_ID], items[ITEM_ID])
        _require_known(interactions, items, ITEM_ID, columns.item_id, origin, config.item_features)
        sources["items"] = str(config.item_features)
    return Dataset(interactions=interactions, users=users, items=items, event_context=tuple(config.event_context),
                   sources=sources, test_mask=test_mask)


def _read_interactions(path: Path, key: str, config: FilesConfig) -> pd.DataFrame:
    frame = read_table(path, key)
    names = config.columns
    renames = {names.user_id: USER_ID, names.item_id: ITEM_ID, names.response: RESPONSE}
    for optional, canonical in ((names.propensity, PROPENSITY), (names.timestamp, TIMESTAMP)):
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
    keep = [USER_ID, ITEM_ID, RESPONSE] + [c for c in (PROPENSITY, TIMESTAMP) if c in frame.columns]
    frame = frame[keep + list(config.event_context)].copy()

    for column, label in ((USER_ID, names.user_id), (ITEM_ID, names.item_id)):
        _reject_missing(frame[column], path, label)
    frame[RESPONSE] = _binary_response(frame[RESPONSE], path, names.response)
    if PROPENSITY in frame.columns:
        _check_propensity(frame[PROPENSITY], path, names.propensity)
    if TIMESTAMP in frame.columns:
        frame[TIMESTAMP] = _parse_timestamps(frame[TIMESTAMP], path, names.timestamp)
    return frame


def _binary_response(values: pd.Series, path: Path, column: str) -> pd.Series:
    _reject_missing(values, path, column)
    if values.dtype == bool:
        return values.astype(np.int8)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | ~numeric.isin([0, 1])]
    if len(bad):
        raise DataError(f"{path}: column {column!r} must be a binary response (0/1 or true/false); found "
                        f"{len(bad)} other value(s), e.g. {examples(bad)}")
    return numeric.astype(np.int8)


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
    except (ValueError, TypeError) as error:
        raise DataError(f"{path}: column {column!r} should hold timestamps or numbers that order events; "
                        f"could not parse it ({error})") from None


def _reject_missing(values: pd.Series, path: Path, column: str) -> None:
    missing = int(values.isna().sum())
    if missing:
        first = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{path}: column {column!r} has {missing} missing (NaN) value(s), first at data row {first}; "
                        "expected a value in every row")


def _read_keyed_table(path: Path, key: str, id_column: str, canonical: str) -> pd.DataFrame:
    frame = read_table(path, key)
    if id_column not in frame.columns:
        raise DataError(f"{path}: missing id column {id_column!r} ({key} is keyed by data.files.columns."
                        f"{canonical}); found columns: {', '.join(map(str, frame.columns))}")
    frame = frame.rename(columns={id_column: canonical})
    _reject_missing(frame[canonical], path, id_column)
    duplicated = frame[canonical][frame[canonical].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: {id_column!r} must identify one row each; {len(duplicated)} id(s) repeat, e.g. "
                        f"{examples(duplicated)}")
    return frame.reset_index(drop=True)


def _require_known(interactions: pd.DataFrame, table: pd.DataFrame, column: str, label: str, origin: str,
                   table_path: Path) -> None:
    ids = interactions[column]
    unknown = pd.unique(ids[~ids.isin(table[column])])
    if len(unknown):
        raise DataError(f"{origin}: {len(unknown)} {label!r} value(s) in the interactions are missing from "
                        f"{table_path}, e.g. {examples(unknown)}; every {label} needs a row there")


def _aligned_ids(logged: pd.Series, table: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids read as numbers in one file and as strings in another are compared as strings."""
    if logged.dtype == table.dtype:
        return logged, table
    return logged.astype(str), table.astype(str)
