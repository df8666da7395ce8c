"""Where everything lives in a run directory: named once here, used by the runner, serving and the dashboard.

Tables are written as ``<name>.parquet`` (most also as ``<name>.csv``); paths are relative to the run
directory.  ``README.md`` ("Run directory") describes each file.
"""

from __future__ import annotations

import re

RUN_JSON = "run.json"
CONFIG = "config.yaml"
DECISION_JSON = "decision.json"
TIMINGS_JSON = "timings.json"
VERSIONS_JSON = "versions.json"

# tables (``<name>.parquet``)
METRICS = "metrics"
RECOMMENDATIONS = "recommendations"  # parquet only, written in row groups as the policies finish
LEADERBOARD = "leaderboard"
SEED_SUMMARY = "seed_summary"
FOLD_SUMMARY = "fold_summary"
TEST_CONTEXTS = "test_contexts"
OFF_POLICY = "off_policy"
OFF_POLICY_POOLED = "off_policy_pooled"  # one row per (policy, k, estimator): pooled over seeds and folds
OFF_POLICY_SUMMARY = "off_policy_summary"
DECISION = "decision"
DRAWS = "draws"
SIMULATION = "simulation"
SIMULATION_SUMMARY = "simulation_summary"
REPLAY = "replay"
LOGGING_MODEL = "logging_model"
SAFEGUARDS = "safeguards"
ITEM_EXPOSURE = "item_exposure"
SESSIONS_SUMMARY = "sessions_summary"  # pipeline/sessions/stage.py
SESSIONS_PER_SEED = "sessions_per_seed"
SESSIONS_CURVES = "sessions_curves"
AB_TESTS = "ab_tests"
AB_DAILY = "ab_daily"
AB_SUMMARY = "ab_summary"


def parquet(table: str) -> str:
    return f"{table}.parquet"


def seed_folder(seed: int) -> str:
    """Per-seed artifacts: the item featurizer and vectors, the item map, the click model (synthetic data)."""
    return f"artifacts/seed_{seed}"


def item_featurizer(seed: int) -> str:
    return f"{seed_folder(seed)}/item_featurizer.joblib"


def item_vectors(seed: int) -> str:
    """A table name."""
    return f"{seed_folder(seed)}/item_vectors"


def item_map(seed: int) -> str:
    """A table name: each item's 2-D position for the dashboard, with its attributes."""
    return f"{seed_folder(seed)}/item_map"


def click_model(seed: int) -> str:
    return f"{seed_folder(seed)}/click_model.npz"


def fold_folder(seed: int, fold: int) -> str:
    return f"{seed_folder(seed)}/fold_{fold}"


def context_featurizer(seed: int, fold: int) -> str:
    return f"{fold_folder(seed, fold)}/context_featurizer.joblib"


def policy_folder(seed: int, fold: int, policy: str) -> str:
    """A trained policy's folder (its ``recommender.joblib`` and, for NeuralLinear, its exported weights)."""
    return f"{fold_folder(seed, fold)}/{safe_name(policy)}"


RECOMMENDER = "recommender.joblib"  # inside a policy folder


def recommender(seed: int, fold: int, policy: str) -> str:
    return f"{policy_folder(seed, fold, policy)}/{RECOMMENDER}"


def data_table(seed: int, name: str) -> str:
    """A table name: the synthetic data of a seed (``interactions``, ``users``, ``items``)."""
    return f"data/seed_{seed}/{name}"


def safe_name(name: str) -> str:
    """A policy name as a folder name (each run of characters other than letters, digits, ``.``, ``_`` and ``-``
    becomes one ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
