"""Which columns become which features: declared lists are checked, the others inferred by type.

Inference: numbers and booleans are numeric, the rest categorical (one-hot encoded, the ``MAX_CATEGORIES`` most
frequent levels a column each and the rarer ones sharing one), except **free text**: a string column whose
values are mostly distinct, long and made of several words (a title, a blurb, a review).  One-hot encoding
such a column gives every value its own column, which no policy can learn from, so an inferred free-text column
is left out, and the run says so (``encoding_notes``) with the keys that route it elsewhere: item text to
TextWiser (``features.item_text.columns``), or one-hot anyway (``*_categorical``).  A column the config lists
is used as listed.
"""

from __future__ import annotations

import pandas as pd

from pipeline.errors import DataError

MAX_CATEGORIES = 50  # rarer levels of a categorical column share one "infrequent" indicator
FREE_TEXT_MIN_DISTINCT = 20  # free text: at least this many distinct values ...
FREE_TEXT_MIN_DISTINCT_SHARE = 0.5  # ... making up at least this share of the rows ...
FREE_TEXT_MIN_LENGTH = 15.0  # ... at least this many characters on average ...
FREE_TEXT_MIN_SPACE_SHARE = 0.5  # ... and at least this share of values with a space in them


def free_text(values: pd.Series) -> dict | None:
    """What makes ``values`` look like free text (distinct values, mean length, share with spaces), or None."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or len(values) == 0:
        return None
    text = values.dropna().astype(str)
    distinct = int(text.nunique())
    if distinct < FREE_TEXT_MIN_DISTINCT or distinct < FREE_TEXT_MIN_DISTINCT_SHARE * len(text):
        return None
    length, spaced = float(text.str.len().mean()), float(text.str.contains(r"\s", regex=True).mean())
    if length < FREE_TEXT_MIN_LENGTH or spaced < FREE_TEXT_MIN_SPACE_SHARE:
        return None
    return {"distinct": distinct, "rows": len(text), "mean_length": length, "with_spaces": spaced}


def infer_feature_columns(frame: pd.DataFrame, reserved: list[str], categorical: list[str] | None,
                          numeric: list[str] | None, exclude: list[str], origin: str, key: str) -> tuple[list, list]:
    """Declared columns are checked; undeclared ones are inferred: numbers and booleans -> numeric, free text left
    out, the rest categorical."""
    candidates = [c for c in frame.columns if c not in reserved and c not in exclude]
    if categorical is not None:
        require_columns(frame, categorical, origin, f"{key}_categorical")
    if numeric is not None:
        require_columns(frame, numeric, origin, f"{key}_numeric")
        non_numeric = [c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])
                       and not pd.api.types.is_bool_dtype(frame[c])]
        if non_numeric:
            raise DataError(f"{origin}: {key}_numeric lists {non_numeric} but they hold non-numeric values "
                            f"(dtype {frame[non_numeric[0]].dtype}); list them under {key}_categorical")
    is_number = {c: pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]) for c in candidates}
    if numeric is None:
        numeric = [c for c in candidates if is_number[c] and c not in (categorical or [])]
    if categorical is None:
        categorical = [c for c in candidates if not is_number[c] and c not in numeric and free_text(frame[c]) is None]
    return list(categorical), list(numeric)


def require_columns(frame: pd.DataFrame, columns: list[str], origin: str, key: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: column(s) {missing} named in {key} are missing; found columns: "
                        f"{', '.join(map(str, frame.columns))}")


def encoding_notes(frame: pd.DataFrame, reserved: list[str], categorical: list[str] | None,
                   numeric: list[str] | None, exclude: list[str], origin: str, key: str, one_hot_warning: int,
                   items: bool) -> list[str]:
    """What the featurizer does to ``frame``'s columns that a user may not expect: free-text columns left out
    (and how to use them), categorical columns whose rarer levels share a column, a one-hot width above
    ``one_hot_warning``.  ``items``: the item table (whose text can go to TextWiser)."""
    chosen, _ = infer_feature_columns(frame, reserved, categorical, numeric, exclude, origin, key)
    notes = []
    if categorical is None:
        for column in [c for c in frame.columns if c not in reserved and c not in exclude]:
            found = free_text(frame[column])
            if found is None:
                continue
            route = ("add it to features.item_text.columns to embed it with TextWiser, or " if items else "")
            notes.append(f"{origin}: column {column!r} looks like free text ({found['distinct']:,} distinct values in "
                         f"{found['rows']:,} rows, {found['mean_length']:.0f} characters on average, "
                         f"{found['with_spaces']:.0%} with spaces), so it is not used as a feature (one-hot encoding "
                         f"would give nearly every value its own column); {route}list it in {key}_categorical to "
                         f"one-hot encode it anyway, or in features.exclude to silence this note")
    widths = {column: min(int(frame[column].nunique()), MAX_CATEGORIES + 1) for column in chosen}
    merged = {column: int(frame[column].nunique()) for column in chosen if frame[column].nunique() > MAX_CATEGORIES}
    if merged:
        listed = ", ".join(f"{column!r} ({levels:,} levels)" for column, levels in merged.items())
        notes.append(f"{origin}: {listed}: the {MAX_CATEGORIES} most frequent levels of each get a one-hot column "
                     "and the rarer ones share one")
    width = sum(widths.values())
    if width > one_hot_warning:
        widest = sorted(widths.items(), key=lambda item: -item[1])[:5]
        notes.append(f"{origin}: the categorical columns become {width:,} one-hot columns (above "
                     f"features.one_hot_warning = {one_hot_warning:,}; the widest: "
                     f"{', '.join(f'{c!r} {w}' for c, w in widest)}); linear policies keep a matrix per item of that "
                     f"size squared: drop columns with features.exclude or raise the threshold")
    return notes
