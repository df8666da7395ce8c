"""Features stage: raw user/context and item attributes -> numeric matrices for the policies.

- Contexts (what a policy sees when it recommends): user attributes, plus the event's own context
  columns and optional time flags when contexts are events.  Categorical columns are one-hot encoded and
  numeric ones scaled as ``features.context_scaling`` says (standardised by default, or min-max, or left as
  given, which is what Mab2Rec does); both are fitted on the training rows of the fold only.
- Items: TextWiser over the item text columns (the YAML schema, TF-IDF then SVD by default), plus
  one-hot categories and numbers scaled as ``features.item_scaling`` says, fitted on the whole catalog (no
  responses are used, and the catalog is known before any event).

The fitted featurizers are saved with the run, so a new user or event can be featurized the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
import pandas as pd
import psutil
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from pipeline.config import FeaturesConfig
from pipeline.data.dataset import CONTEXT_ID, EVENT_ID, ITEM_ID, RESPONSE, USER_ID, Dataset
from pipeline.errors import DataError, examples
from pipeline.feature_columns import MAX_CATEGORIES, encoding_notes, infer_feature_columns, require_columns
from pipeline.rewards import CLICKS, RewardScale
from pipeline.split import Fold

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.config import PipelineConfig

log = logging.getLogger("pipeline")
SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "none": lambda: "passthrough"}


class TabularFeaturizer:
    """One-hot categorical + numeric columns scaled by ``scaling`` (``standard``, ``minmax`` or ``none``), with
    the scikit-learn fit/transform contract."""

    def __init__(self, categorical: list[str], numeric: list[str], scaling: str = "standard"):
        self.categorical = categorical
        self.numeric = numeric
        self.scaling = scaling

    def fit(self, frame: pd.DataFrame) -> "TabularFeaturizer":
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES,
                                sparse_output=False)
        self.transformer_ = ColumnTransformer(
            [("categorical", encoder, self.categorical), ("numeric", SCALERS[self.scaling](), self.numeric)],
            verbose_feature_names_out=False,
        )
        prepared = self._prepared(frame)
        levels = [prepared[column].nunique() for column in self.categorical]
        if self.categorical and max(levels) <= MAX_CATEGORIES and len(prepared) > 10_000:
            # No column has enough levels for "infrequent" grouping, so the encoder only needs each distinct
            # combination once (scikit-learn counts object columns in Python: 8 s at 1M rows); the scaler is
            # then refitted on every row, giving exactly what a fit on all rows gives.
            self.transformer_.fit(prepared.drop_duplicates(self.categorical))
            if self.numeric and self.scaling != "none":
                self.transformer_.named_transformers_["numeric"].fit(prepared[self.numeric])
        else:
            self.transformer_.fit(prepared)
        self.feature_names_ = [str(name) for name in self.transformer_.get_feature_names_out()]
        self.numeric_range_ = {c: (float(prepared[c].min()), float(prepared[c].max())) for c in self.numeric}
        return self

    def unusual(self, record: dict) -> list[tuple[str, str]]:
        """(column, why) for each value of ``record`` the fitted featurizer has not seen the like of: a categorical
        level absent from training (it gets no column of its own), or a number farther outside the training
        range than the range is wide.  Featurizers fitted before this check report only unseen levels."""
        if not hasattr(self, "_levels_"):  # per request: built once
            encoder = self.transformer_.named_transformers_.get("categorical")
            self._levels_ = [{str(level) for level in levels} for levels in getattr(encoder, "categories_", [])]
        found = [(column, "a level never seen in training") for column, levels in zip(self.categorical, self._levels_)
                 if str(record[column]) not in levels]
        for column, (low, high) in getattr(self, "numeric_range_", {}).items():
            value, width = float(record[column]), high - low
            if value < low - width or value > high + width:
                found.append((column, f"far outside the training range [{low:g}, {high:g}]"))
        return found

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.transformer_.transform(self._prepared(frame)), dtype=float)

    def transform_records(self, records: list[dict]) -> np.ndarray:
        """Same output as ``transform`` for a few raw rows given as dicts, without building a DataFrame.

        Serving featurizes one context per request, where scikit-learn's per-call overhead (about 4 ms)
        dominates; this reads the fitted encoder and scaler once and fills the vector directly.
        """
        if not hasattr(self, "_fast_"):
            self._fast_ = self._fast_plan()
        lookups, offset, width = self._fast_
        out = np.zeros((len(records), width))
        for row, record in enumerate(records):
            for column, (mapping, fallback) in lookups.items():
                position = mapping.get(str(record[column]), fallback)
                if position is not None:
                    out[row, position] = 1.0
            out[row, offset:] = [float(record[c]) for c in self.numeric]
        scaler = self.transformer_.named_transformers_.get("numeric")
        scaling = getattr(self, "scaling", "standard")  # featurizers saved before the option were standard
        if self.numeric and scaling == "standard":  # the same operations as the scaler's transform, bit for bit
            out[:, offset:] = (out[:, offset:] - scaler.mean_) / scaler.scale_
        elif self.numeric and scaling == "minmax":
            out[:, offset:] = out[:, offset:] * scaler.scale_ + scaler.min_
        return out

    def _fast_plan(self):
        encoder = self.transformer_.named_transformers_.get("categorical")
        lookups, position = {}, 0
        for index, column in enumerate(self.categorical):
            infrequent = getattr(encoder, "infrequent_categories_", [None] * len(self.categorical))[index]
            rare = set() if infrequent is None else {str(c) for c in infrequent}
            frequent = [str(c) for c in encoder.categories_[index] if str(c) not in rare]
            mapping = {value: position + i for i, value in enumerate(frequent)}
            # sklearn puts the "infrequent" column after the frequent ones; unknown values go there too, if it exists
            fallback = position + len(frequent) if rare else None
            mapping.update({value: fallback for value in rare})
            lookups[column] = (mapping, fallback)
            position += len(frequent) + (1 if rare else 0)
        return lookups, position, position + len(self.numeric)

    def _prepared(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[self.categorical + self.numeric].copy()
        for column in self.categorical:
            frame[column] = frame[column].astype(str)
        for column in self.numeric:
            frame[column] = frame[column].astype(float)
        return frame


class ItemFeaturizer:
    """TextWiser vectors of the item text plus tabular item attributes."""

    def __init__(self, text_columns: list[str], text_schema, tabular: TabularFeaturizer, seed: int):
        self.text_columns = text_columns
        self.text_schema = text_schema
        self.tabular = tabular
        self.seed = seed

    def fit(self, items: pd.DataFrame) -> "ItemFeaturizer":
        self.textwiser_ = None
        names = []
        if self.text_columns:
            from textwiser import Embedding, TextWiser  # heavy import, only when item text is used

            self.textwiser_ = TextWiser(Embedding.Compound(schema=_seeded(self.text_schema, self.seed)))
            self.textwiser_.fit(self._documents(items))
            names = [f"text_{i}" for i in range(self._text_vectors(items).shape[1])]
        self.tabular.fit(items)
        self.feature_names_ = names + self.tabular.feature_names_
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        parts = [self._text_vectors(items)] if self.textwiser_ is not None else []
        return np.hstack(parts + [self.tabular.transform(items)])

    def _documents(self, items: pd.DataFrame) -> list[str]:
        return items[self.text_columns].astype(str).agg(". ".join, axis=1).tolist()

    def _text_vectors(self, items: pd.DataFrame) -> np.ndarray:
        vectors = self.textwiser_.transform(self._documents(items))
        return np.asarray(vectors.todense() if hasattr(vectors, "todense") else vectors, dtype=float)


def _seeded(schema, seed: int):
    """Give NMF/LDA transformations the config seed unless the schema sets one (SVD is deterministic)."""
    if isinstance(schema, dict):
        return {key: [_seeded(part, seed) for part in parts] for key, parts in schema.items()}
    if isinstance(schema, str) and schema.lower() in ("nmf", "lda"):
        return [schema, {"random_state": seed}]
    if isinstance(schema, list) and len(schema) == 2 and str(schema[0]).lower() in ("nmf", "lda"):
        return [schema[0], {"random_state": seed, **schema[1]}]
    return schema


@dataclass
class FoldFeatures:
    """What the policies and the evaluation need for one fold, keyed the way Mab2Rec expects."""

    contexts: pd.DataFrame | None  # CONTEXT_ID first, then the context feature columns; one row per context
    train: pd.DataFrame  # CONTEXT_ID, ITEM_ID, RESPONSE
    test: pd.DataFrame  # CONTEXT_ID, ITEM_ID, RESPONSE, EVENT_ID
    context_featurizer: TabularFeaturizer | None
    reward: RewardScale = CLICKS  # what RESPONSE holds (the dataset's)

    def context_matrix(self, context_ids) -> np.ndarray:
        """Feature rows of ``context_ids`` (unknown ids: zeros, as Mab2Rec fills them), copying only those rows.

        Selecting columns by name or re-indexing the table would copy all of it first (224 MB at 1M contexts).
        """
        if not hasattr(self, "_index"):
            assert self.contexts.columns[0] == CONTEXT_ID, "the context table starts with its id column"
            self._index = pd.Index(self.contexts[CONTEXT_ID])
        positions = self._index.get_indexer(np.asarray(context_ids))
        matrix = self.contexts.iloc[np.maximum(positions, 0), 1:].to_numpy(dtype=float)
        matrix[positions < 0] = 0.0
        return np.ascontiguousarray(matrix)


def item_featurizer(dataset: Dataset, config: FeaturesConfig, seed: int) -> ItemFeaturizer | None:
    """Fit the item featurizer on the catalog; None when the data has no item table."""
    if dataset.items is None:
        return None
    items, origin = dataset.items, dataset.source("items")
    text = item_text_columns(items, config, origin)
    categorical, numeric = infer_feature_columns(items, [ITEM_ID] + text, config.item_categorical, config.item_numeric,
                                            config.exclude, origin, "features.item")
    _reject_nan(items, text + categorical + numeric, origin, ITEM_ID)
    featurizer = ItemFeaturizer(text, config.item_text.text_schema,
                                TabularFeaturizer(categorical, numeric, config.item_scaling), seed)
    try:
        return featurizer.fit(items)
    except ValueError as error:  # scikit-learn's TF-IDF/SVD/NMF/LDA refusing this text (the user's to fix)
        blank = int(items[text].astype(str).agg("".join, axis=1).str.strip().isin(["", "nan", "None"]).sum()) \
            if text else 0
        raise DataError(f"{origin}: TextWiser could not featurize the item text in {text} "
                        f"(features.item_text.schema {config.item_text.text_schema}): {' '.join(str(error).split())}. "
                        f"{blank} of {len(items)} item(s) have no text. Fill the text columns, change the schema "
                        "(e.g. min_df, n_components) or set features.item_text.columns: [] to use no text") from None


def item_text_columns(items: pd.DataFrame, config: FeaturesConfig, origin: str) -> list[str]:
    """The item columns TextWiser embeds: those named, or of the default names those the table has."""
    text = list(config.item_text.columns)
    if "columns" not in config.item_text.model_fields_set:  # the default names: use those the table has
        text = [column for column in text if column in items.columns]
    require_columns(items, text, origin, "features.item_text.columns")
    return text


def feature_notes(dataset: Dataset, config: FeaturesConfig) -> list[str]:
    """What the featurizers will do to the user's columns that is worth saying (``feature_columns.encoding_notes``):
    for the item table, the user table and the event-context columns."""
    notes, warn = [], config.one_hot_warning
    if dataset.items is not None:
        reserved = [ITEM_ID, *item_text_columns(dataset.items, config, dataset.source("items"))]
        notes += encoding_notes(dataset.items, reserved, config.item_categorical, config.item_numeric, config.exclude,
                                dataset.source("items"), "features.item", warn, items=True)
    contexts = []
    if dataset.users is not None:
        contexts.append((dataset.users.drop(columns=[USER_ID]), dataset.source("users")))
    if dataset.event_context:
        contexts.append((dataset.interactions[list(dataset.event_context)], dataset.source("interactions")))
    for frame, origin in contexts:
        notes += encoding_notes(frame, [], config.context_categorical, config.context_numeric, config.exclude,
                                origin, "features.context", warn, items=False)
    return notes


def item_vectors(featurizer: ItemFeaturizer, items: pd.DataFrame) -> pd.DataFrame:
    vectors = featurizer.transform(items)
    return pd.concat([items[[ITEM_ID]].reset_index(drop=True),
                      pd.DataFrame(vectors, columns=featurizer.feature_names_)], axis=1)


def context_frame(dataset: Dataset, rows: np.ndarray) -> pd.DataFrame:
    """Raw context attributes of interaction ``rows``, one row per context, keyed by CONTEXT_ID.

    Event-level contexts are the event's own columns plus its user's attributes; user-level contexts are
    the user's attributes.
    """
    logged = dataset.interactions.iloc[rows]
    if dataset.context_level == "user":
        keys = logged[[USER_ID]].drop_duplicates()
        frame = keys if dataset.users is None else keys.merge(dataset.users, on=USER_ID, how="left")
        return frame.rename(columns={USER_ID: CONTEXT_ID}).reset_index(drop=True)
    key = dataset.context_key  # the event, or its impression when the rows of a slate are grouped
    frame = logged[[key, USER_ID, *dataset.event_context]]
    if dataset.users is not None:
        frame = frame.merge(dataset.users, on=USER_ID, how="left")
    return frame.drop(columns=[USER_ID]).rename(columns={key: CONTEXT_ID}).reset_index(drop=True)


def fold_features(dataset: Dataset, fold: Fold, config: "PipelineConfig") -> FoldFeatures:
    """``build_fold_features``, read from ``OUTPUT_DIR/.cache/features`` when the same data, fold and feature
    config were featurized before by the same code.  The key hashes the values themselves (an edited file
    never hits a stale entry), this module's source and scikit-learn's version."""
    if not config.run.cache:
        return build_fold_features(dataset, fold, config.features)
    key = hashlib.sha256(Path(__file__).read_bytes() + sklearn.__version__.encode())
    for table in (dataset.interactions, dataset.users):
        if table is not None:
            key.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
            key.update(repr(list(table.columns)).encode())
    key.update(repr((dataset.event_context, dataset.context_level, config.features.model_dump_json())).encode())
    key.update(fold.train_rows.tobytes() + b"|" + fold.test_rows.tobytes())
    path = Path(config.run.output_dir) / ".cache" / "features" / f"{key.hexdigest()[:32]}.joblib"
    if path.exists():
        try:
            return joblib.load(path)
        except Exception:  # a cache entry from another library version: recompute and overwrite
            log.warning("features cache entry %s could not be read; recomputing it", path)
    features = build_fold_features(dataset, fold, config.features)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_cache_files(path.parent)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    joblib.dump(features, partial)
    partial.replace(path)  # atomic: a reader never sees half a file
    return features


def _remove_orphaned_cache_files(folder: Path) -> None:
    """Half-written cache files of runs that were killed while writing them (their process is gone)."""
    for orphan in folder.glob("*.partial-*"):
        pid = orphan.suffix.removeprefix(".partial-")
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            orphan.unlink(missing_ok=True)


def build_fold_features(dataset: Dataset, fold: Fold, config: FeaturesConfig) -> FoldFeatures:
    key = dataset.context_key
    train = _mab2rec_rows(dataset.interactions.iloc[fold.train_rows], key)
    test = _mab2rec_rows(dataset.interactions.iloc[fold.test_rows], key)

    raw = context_frame(dataset, np.concatenate([fold.train_rows, fold.test_rows]))
    raw = raw.drop_duplicates(CONTEXT_ID).reset_index(drop=True)
    raw_train = raw[raw[CONTEXT_ID].isin(train[CONTEXT_ID])]
    origin = dataset.source("users") if not dataset.event_context else dataset.source("interactions")
    categorical, numeric = infer_feature_columns(raw_train, [CONTEXT_ID], config.context_categorical,
                                            config.context_numeric, config.exclude, origin, "features.context")
    if not categorical and not numeric:
        return FoldFeatures(None, train, test, None, dataset.reward)
    used = categorical + numeric
    if dataset.users is not None:
        _reject_nan(dataset.users, [c for c in used if c in dataset.users], dataset.source("users"), USER_ID)
    logged = dataset.interactions
    _reject_nan(logged, [c for c in used if c in dataset.event_context], dataset.source("interactions"), EVENT_ID)
    featurizer = TabularFeaturizer(categorical, numeric, config.context_scaling).fit(raw_train)
    contexts = pd.concat([raw[[CONTEXT_ID]], pd.DataFrame(featurizer.transform(raw),
                                                          columns=featurizer.feature_names_)], axis=1)
    return FoldFeatures(contexts, train, test, featurizer, dataset.reward)


def _mab2rec_rows(logged: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = logged[[ITEM_ID, RESPONSE, EVENT_ID]].reset_index(drop=True)
    frame.insert(0, CONTEXT_ID, logged[key].to_numpy())
    return frame


def _reject_nan(frame: pd.DataFrame, columns: list[str], origin: str, id_column: str) -> None:
    for column in columns:
        missing = frame[column].isna().to_numpy()
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            missing |= ~np.isfinite(frame[column].to_numpy(dtype=float, na_value=np.nan))
        if missing.any():
            raise DataError(f"{origin}: feature column {column!r} has {int(missing.sum())} missing or infinite "
                            f"value(s) (e.g. {id_column} {examples(frame.loc[missing, id_column], 1)}); fill them "
                            "or list the column in "
                            "features.exclude")
