"""How far to trust each number: bootstrap intervals and the number of test events that decided it.

Every metric is an average over test contexts (users or events), so a bootstrap resample is a vector of
Poisson(1) weights over the contexts (the "Poisson bootstrap", equivalent to resampling contexts with
replacement for large ``n``); one weight matrix per fold is shared by all policies and metrics, so
intervals of different policies come from the same resamples.  Intervals are the 2.5% and 97.5%
percentiles over ``evaluation.bootstrap_resamples`` resamples.

Recomputing Jurity for every resample would cost seconds per policy, so ``replay_details`` decomposes each
of Jurity's metrics into per-context contributions with Jurity's own definitions (and its
``get_sorted_clicks`` for the top-k lists; a test checks the decomposition reproduces Jurity's values):

- CTR@k: clicks / matched logged events, over the events whose logged item is in the top-k list;
- AUC@k: ROC AUC of (click, score) over those matched events;
- Precision@k, MAP@k: per context with a click and a list; Recall@k, NDCG@k: per context with a click.

``support`` is how many matched events (AUC, CTR) or contexts (the ranking metrics, ground truth) the
value averages over.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jurity.recommenders.ndcg import idcg
from jurity.utils import get_sorted_clicks

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID

SCORE = "score"
DETAIL_COLUMNS = ["metric", "k", "low", "high", "support"]


class Bootstrap:
    """Poisson resampling weights over the test contexts of one fold."""

    def __init__(self, contexts: np.ndarray, resamples: int, seed: int):
        self.index = pd.Index(pd.unique(contexts))
        rng = np.random.default_rng([seed, 3])
        self.weights = rng.poisson(1.0, size=(resamples, len(self.index))).astype(float)

    @property
    def enabled(self) -> bool:
        return len(self.weights) > 0

    def _columns(self, contexts) -> np.ndarray:
        return self.weights[:, self.index.get_indexer(np.asarray(contexts))]

    def mean(self, values: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of the mean of per-context ``values``."""
        return self.ratio(values, np.ones(len(values)), contexts)

    def ratio(self, numerators: np.ndarray, denominators: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of ``sum(numerators) / sum(denominators)`` over contexts."""
        if not self.enabled or len(numerators) == 0:
            return np.nan, np.nan
        weights = self._columns(contexts)
        with np.errstate(invalid="ignore", divide="ignore"):
            estimates = (weights @ np.asarray(numerators, float)) / (weights @ np.asarray(denominators, float))
        return _percentiles(estimates)

    def auc(self, clicks: np.ndarray, scores: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of the ROC AUC of (click, score) pairs, each pair weighted by its context's weight."""
        if not self.enabled or len(clicks) == 0:
            return np.nan, np.nan
        order = np.argsort(scores, kind="stable")
        clicks, scores = np.asarray(clicks, float)[order], np.asarray(scores)[order]
        weights = self._columns(np.asarray(contexts)[order])
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of tied scores
        positives = np.add.reduceat(weights * clicks, starts, axis=1)
        negatives = np.add.reduceat(weights * (1 - clicks), starts, axis=1)
        below = np.cumsum(negatives, axis=1) - negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (positives * (below + negatives / 2)).sum(1) / (positives.sum(1) * negatives.sum(1))
        return _percentiles(auc)


def _percentiles(estimates: np.ndarray) -> tuple[float, float]:
    finite = estimates[np.isfinite(estimates)]
    if len(finite) < 0.5 * len(estimates):  # undefined in most resamples (e.g. AUC with one class)
        return np.nan, np.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def replay_contributions(actual: pd.DataFrame, recommendations: pd.DataFrame, k: int) -> dict[str, pd.DataFrame]:
    """Per-context pieces of Jurity's replay metrics at ``k`` (see the module docstring).

    ``actual``: ``context_id, item_id, score`` (the logged response); ``recommendations``: ``context_id,
    item_id, score`` (the policy's).  Returns, per metric, a frame with ``context_id`` and ``value`` (plus
    ``click``/``score`` for AUC and ``clicks``/``matched`` for CTR).
    """
    top = get_sorted_clicks(recommendations.set_index([CONTEXT_ID, ITEM_ID]), CONTEXT_ID, SCORE, k).reset_index()
    top["rank"] = top.groupby(CONTEXT_ID).cumcount() + 1
    matched = actual.merge(top[[CONTEXT_ID, ITEM_ID, SCORE]], on=[CONTEXT_ID, ITEM_ID], suffixes=("", "_policy"))
    ctr = matched.groupby(CONTEXT_ID)[SCORE].agg(clicks="sum", matched="count").reset_index()
    auc = matched.rename(columns={SCORE: "click", f"{SCORE}_policy": "score"})[[CONTEXT_ID, "click", "score"]]

    clicks = actual[actual[SCORE].astype(bool)][[CONTEXT_ID, ITEM_ID]]
    clicked_ranks = clicks.merge(top[[CONTEXT_ID, ITEM_ID, "rank"]], on=[CONTEXT_ID, ITEM_ID], how="left")
    by_context = clicked_ranks.groupby(CONTEXT_ID)
    recall = by_context["rank"].apply(lambda ranks: ranks.notna().mean())
    n_clicks = by_context.size()
    dcg = (1 / np.log2(1 + clicked_ranks["rank"])).fillna(0).groupby(clicked_ranks[CONTEXT_ID]).sum()
    ndcg = dcg / n_clicks.map(idcg)

    listed = top[top[CONTEXT_ID].isin(clicks[CONTEXT_ID])]  # contexts with both clicks and a list
    hits = listed.merge(clicks.assign(hit=1.0), on=[CONTEXT_ID, ITEM_ID], how="left").fillna({"hit": 0.0})
    per_list = hits.groupby(CONTEXT_ID, sort=False)["hit"]
    precision = per_list.mean()
    precision_at = per_list.cumsum() / (per_list.cumcount() + 1) * hits["hit"]
    average_precision = precision_at.groupby(hits[CONTEXT_ID]).sum() / np.minimum(k, n_clicks.loc[precision.index])

    def frame(series: pd.Series) -> pd.DataFrame:
        return series.rename("value").rename_axis(CONTEXT_ID).reset_index()

    return {"CTR": ctr, "AUC": auc, "Precision": frame(precision), "Recall": frame(recall), "NDCG": frame(ndcg),
            "MAP": frame(average_precision.loc[precision.index])}


def replay_details(actual: pd.DataFrame, recommendations: pd.DataFrame, metrics: list[tuple[str, int]],
                   bootstrap: Bootstrap) -> pd.DataFrame:
    """``metric, k, low, high, support`` for each (metric, k) pair of the policy's replay metrics."""
    rows = []
    for k in sorted({k for _, k in metrics}):
        parts = replay_contributions(actual, recommendations, k)
        for name in [name for name, at in metrics if at == k]:
            part = parts[name]
            if name == "CTR":
                interval = bootstrap.ratio(part["clicks"].to_numpy(), part["matched"].to_numpy(), part[CONTEXT_ID])
                support = int(part["matched"].sum())
            elif name == "AUC":
                interval = bootstrap.auc(part["click"].to_numpy(), part["score"].to_numpy(), part[CONTEXT_ID])
                support = len(part)
            else:
                interval = bootstrap.mean(part["value"].to_numpy(), part[CONTEXT_ID])
                support = len(part)
            rows.append((name, k, *interval, support))
    return pd.DataFrame(rows, columns=DETAIL_COLUMNS)
