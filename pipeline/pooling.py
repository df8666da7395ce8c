"""One interval per quantity: every estimate pooled over seeds and folds, from its bootstrap draws.

A run's quantity is a policy's mean over (seed, fold) of one metric or estimate.  Its interval is the 95%
percentile interval of its draws averaged over (seed, fold) resample by resample: each fold's draws have that
fold's interval as their percentile interval (``offpolicy/intervals.py``), and different folds and seeds draw
independently, so on one fold and one seed the pooled interval *is* the row's interval, and on several it is
the interval of their mean.  The decision table, the terminal's off-policy table, ``off_policy_pooled.csv``
and the dashboard all read these intervals; none computes another.

Draws are long rows ``seed, fold, policy, label, resample, value`` (``draws.parquet``), labelled
``"<metric or estimator>@<k>"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.labels import split_label
from pipeline.offpolicy import LOGGING, observed_name
from pipeline.offpolicy.evaluate import DIAGNOSTICS
from pipeline.rewards import CLICKS, RewardScale
from pipeline.uncertainty import Z_95

PERCENTILES = (2.5, 97.5)
POOLED_COLUMNS = ["policy", "k", "estimator", "value", "low", "high", "se", "bias", "cases", *DIAGNOSTICS]


def with_logging_draws(draws: pd.DataFrame, label: str) -> pd.DataFrame:
    """The draws of ``label``, with the logging policy's observed-rate draws standing in for it where ``label`` is
    an estimate (the logging policy's value on its own log is observed, not estimated)."""
    if label.startswith("true_"):
        return draws[draws["label"] == label]
    name, k = split_label(label)
    observed = (draws["policy"] == LOGGING) & (draws["label"] == f"{observed_name(name)}@{k}")
    return pd.concat([draws[(draws["label"] == label) & (draws["policy"] != LOGGING)],
                      draws[observed].assign(label=label)], ignore_index=True)


def pooled_draws(draws: pd.DataFrame, label: str) -> pd.DataFrame:
    """(policies x resamples): each policy's draws of ``label`` averaged over (seed, fold), resample by resample.

    A policy missing from some (seed, fold) is left out (its average would not be comparable)."""
    rows = draws[draws["label"] == label]
    if rows.empty:
        return pd.DataFrame()
    cells = rows.groupby(["seed", "fold"]).ngroups
    per_policy = rows.groupby("policy")[["seed", "fold"]].apply(lambda g: len(g.drop_duplicates()))
    complete = per_policy.index[per_policy == cells]
    rows = rows[rows["policy"].isin(complete)]
    return rows.groupby(["policy", "resample"])["value"].mean().unstack("resample")


def interval_of_draws(matrix: np.ndarray, values: np.ndarray, reward: RewardScale = CLICKS) -> tuple[np.ndarray, ...]:
    """Per row of ``matrix`` (policies x resamples): the percentile interval, cut to the reward's range and widened
    to contain the row's point value (the mean of per-fold medians can sit a hair outside it)."""
    low, high = reward.clip(np.percentile(matrix, PERCENTILES, axis=1))
    return np.minimum(low, values), np.maximum(high, values)


def pooled_off_policy(off_policy: pd.DataFrame, draws: pd.DataFrame, reward: RewardScale = CLICKS) -> pd.DataFrame:
    """``off_policy_pooled.csv``: one row per (policy, k, estimator), the mean over (seed, fold) with the pooled
    interval; diagnostics averaged, ``reliable`` only where every fold's estimate is, every flag kept.

    Without draws (``evaluation.bootstrap_resamples: 0``) a single (seed, fold) keeps its own interval and
    several are pooled by the normal approximation ``mean +- 1.96 sqrt(sum se^2) / n``."""
    rows = []
    numeric = [c for c in DIAGNOSTICS if c not in ("reliable", "flag")]
    for (policy, k, name), group in off_policy.groupby(["policy", "k", "estimator"], sort=False):
        defined = group[group["value"].notna()]
        row = {"policy": policy, "k": k, "estimator": name, "cases": len(group),
               **group[numeric].mean().to_dict(), "reliable": bool(group["reliable"].all()),
               "flag": "; ".join(dict.fromkeys(f for f in group["flag"] if isinstance(f, str) and f))}
        if len(defined) < len(group):  # undefined in some fold (SNIPS without a match): undefined pooled
            rows.append({**row, "value": np.nan, "low": reward.low, "high": reward.high, "se": np.nan, "bias": np.nan})
            continue
        row.update(value=float(defined["value"].mean()), bias=float(defined["bias"].mean()),
                   se=float(np.sqrt((defined["se"] ** 2).sum()) / len(defined)))
        rows.append(row)
    pooled = pd.DataFrame(rows, columns=[c for c in POOLED_COLUMNS if c not in ("low", "high")] + ["low", "high"])
    for (k, name), group in pooled.groupby(["k", "estimator"], sort=False):
        label = f"{name}@{k}"
        matrix = pooled_draws(draws, label) if len(draws) else pd.DataFrame()
        for index, row in group.iterrows():
            if not np.isfinite(row["value"]):
                continue
            if row["policy"] in matrix.index:
                low, high = interval_of_draws(matrix.loc[[row["policy"]]].to_numpy(float), np.array([row["value"]]),
                                              reward)
                pooled.loc[index, ["low", "high"]] = low[0], high[0]
            else:
                pooled.loc[index, ["low", "high"]] = _without_draws(off_policy, row, reward)
    return pooled[POOLED_COLUMNS]


def _without_draws(off_policy: pd.DataFrame, row: pd.Series, reward: RewardScale) -> tuple[float, float]:
    cases = off_policy[(off_policy["policy"] == row["policy"]) & (off_policy["k"] == row["k"])
                       & (off_policy["estimator"] == row["estimator"])]
    if len(cases) == 1:
        return float(cases["low"].iloc[0]), float(cases["high"].iloc[0])
    value, half = row["value"], Z_95 * row["se"]
    return float(reward.clip(value - half)), float(reward.clip(value + half))
