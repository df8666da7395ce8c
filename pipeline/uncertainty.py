"""How far to trust each number: bootstrap intervals and the number of test events that decided it.

Every metric is an average over test contexts (users or events), so a bootstrap resample is a vector of
Poisson(1) weights over the contexts (the "Poisson bootstrap", equivalent to resampling contexts with
replacement for large ``n``); one weight matrix per fold is shared by all policies and metrics, so
intervals of different policies come from the same resamples.  Intervals are the 2.5% and 97.5%
percentiles over ``evaluation.bootstrap_resamples`` resamples.

Recomputing Jurity for every resample would cost seconds per policy, so ``replay_details`` decomposes each
of Jurity's metrics into per-context contributions with Jurity's own definitions (and the same sort its
``get_sorted_clicks`` uses for the top-k lists); its values are computed from those contributions too, which
is much faster than Jurity's ``CombinedMetrics`` at scale (tests check both equal Jurity's):

- CTR@k: clicks / matched logged events, over the events whose logged item is in the top-k list;
- AUC@k: ROC AUC of (click, score) over those matched events;
- Precision@k, MAP@k: per context with a click and a list; Recall@k, NDCG@k: per context with a click.

``support`` is how many matched events (AUC, CTR) or contexts (the ranking metrics, ground truth) the
value averages over.

Where the percentile bootstrap cannot be honest, the interval says so instead:

- A replay metric that is a mean of values in [0, 1] (CTR, Precision, Recall, NDCG, MAP) gets at least its
  Wilson score interval on ``support`` units: when every matched event is a non-click the bootstrap collapses
  onto [0, 0], but 0 clicks in 40 events is still compatible with a CTR of 0.09.  (For values in [0, 1] the
  variance is at most ``p (1 - p)``, so the Wilson interval of a proportion is a conservative floor.)
- With no unit at all the value is a convention (Jurity's CTR of 0), and with a single unit, or an AUC with
  fewer than two clicked or two unclicked events, resampling only replays the same few events: the
  interval is the metric's whole range, [0, 1].
- With real-valued rewards (``pipeline/rewards.py``) CTR is the mean reward of the matched events: its floor
  is the Wilson interval on the unit scale, mapped back, and its whole range is the reward's ``[low, high]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jurity.recommenders import BinaryRecoMetrics, RankingRecoMetrics
from jurity.recommenders.ndcg import idcg
from sklearn.metrics import roc_auc_score

from pipeline.config import METRIC_NAMES
from pipeline.data.dataset import CONTEXT_ID, ITEM_ID
from pipeline.rewards import CLICKS, RewardScale

SCORE = "score"


class Bootstrap:
    """Poisson resampling weights over the test contexts of one fold (``fold``) of one run seed (``seed``)."""

    def __init__(self, contexts: np.ndarray, resamples: int, seed: int, fold: int = 0):
        self.index = pd.Index(pd.unique(np.asarray(contexts)))
        if not self.index.is_unique:  # pragma: no cover - pd.unique guarantees it
            raise ValueError("bootstrap contexts must be unique")
        self.resamples, self.seed, self.fold = resamples, seed, fold
        self._weights = None

    @property
    def key(self) -> tuple[int, int]:
        """What seeds this fold's random numbers: its weights and the noise of its draws differ between folds
        and seeds, so resamples of different folds are independent."""
        return self.seed, self.fold

    @property
    def weights(self) -> np.ndarray:
        """(resamples, contexts) Poisson(1) weights, drawn on first use (so the object pickles small).

        Stored as uint8 (Poisson(1) counts above 255 have probability below 1e-300): 200 resamples x 200k
        contexts is 40 MB instead of 320 MB in float64.  ``_weighted_sums`` multiplies them in float32 blocks;
        sums over contexts lose about 1e-6 relative, far below the resampling noise.
        """
        if self._weights is None:
            rng = np.random.default_rng([self.seed, self.fold, 3])
            self._weights = rng.poisson(1.0, size=(self.resamples, len(self.index))).astype(np.uint8)
        return self._weights

    @staticmethod
    def _weighted_sums(weights: np.ndarray, values: np.ndarray, block: int = 32) -> np.ndarray:
        """``weights @ values`` (resamples) without a full float copy of the weights."""
        values = np.asarray(values, np.float32)
        return np.concatenate([weights[start:start + block].astype(np.float32) @ values
                               for start in range(0, len(weights), block)]).astype(float)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_weights": None}

    def release(self) -> None:
        """Free the weights (they are drawn again, identically, on next use)."""
        self._weights = None

    @property
    def enabled(self) -> bool:
        return self.resamples > 0

    def _columns(self, contexts) -> np.ndarray:
        positions = self.index.get_indexer(np.asarray(contexts))
        if (positions < 0).any():  # get_indexer's -1 would silently take the last context's weights
            unknown = pd.unique(np.asarray(contexts)[positions < 0])
            raise ValueError(f"{len(unknown)} context id(s) are not test contexts of this fold, e.g. {unknown[:3].tolist()}")
        if len(positions) == len(self.index) and np.array_equal(positions, np.arange(len(positions))):
            return self.weights  # every context in order: no 2-D gather (hundreds of MB at 200k contexts)
        return self.weights[:, positions]

    def mean(self, values: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of the mean of per-context ``values``."""
        return self.ratio(values, np.ones(len(values)), contexts)

    def ratio(self, numerators: np.ndarray, denominators: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of ``sum(numerators) / sum(denominators)`` over contexts."""
        return interval_of(self.ratio_draws(numerators, denominators, contexts))

    def mean_draws(self, values: np.ndarray, contexts) -> np.ndarray | None:
        """The mean of per-context ``values`` on every resample (see ``ratio_draws``)."""
        return self.ratio_draws(values, np.ones(len(values)), contexts)

    def ratio_draws(self, numerators: np.ndarray, denominators: np.ndarray, contexts) -> np.ndarray | None:
        """``sum(numerators) / sum(denominators)`` on every resample (None without resamples or rows).

        Every policy of a fold is resampled with the same weights, so the draws of two policies are paired: the
        draws of their difference are the differences of their draws."""
        if not self.enabled or len(numerators) == 0:
            return None
        sums = self.weighted_column_sums(np.column_stack([numerators, denominators]), contexts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[:, 0] / sums[:, 1]

    def weighted_column_sums(self, values: np.ndarray, contexts) -> np.ndarray:
        """(resamples, columns): each resample's weighted sum of each column of the per-context ``values``."""
        weights = self._columns(contexts)
        return np.column_stack([self._weighted_sums(weights, column) for column in np.asarray(values, float).T])

    def auc(self, clicks: np.ndarray, scores: np.ndarray, contexts) -> tuple[float, float]:
        """Interval of the ROC AUC of (click, score) pairs, each pair weighted by its context's weight."""
        if not self.enabled or len(clicks) == 0:
            return np.nan, np.nan
        order = np.argsort(scores, kind="stable")
        clicks, scores = np.asarray(clicks, float)[order], np.asarray(scores)[order]
        weights = self._columns(np.asarray(contexts)[order]).astype(float)  # matched events only: a small block
        starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of tied scores
        positives = np.add.reduceat(weights * clicks, starts, axis=1)
        negatives = np.add.reduceat(weights * (1 - clicks), starts, axis=1)
        below = np.cumsum(negatives, axis=1) - negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (positives * (below + negatives / 2)).sum(1) / (positives.sum(1) * negatives.sum(1))
        return percentiles(auc)


Z_95 = 1.959963984540054


def wilson(successes: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n`` (the whole range [0, 1] when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = successes / n, Z_95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n ** 2)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mean_wilson(mean: float, n: float, reward: RewardScale = CLICKS) -> tuple[float, float]:
    """95% Wilson interval of a mean reward in ``[low, high]`` over ``n`` units: Wilson's interval of the mean on
    the unit scale, mapped back (the variance bound behind it holds for any value in [0, 1], not only clicks)."""
    unit = float(np.clip(reward.to_unit(mean), 0.0, 1.0))
    return tuple(reward.from_unit(wilson(unit * n, n)).tolist())


def honest_interval(value: float, bootstrap_interval: tuple[float, float], support: int,
                    reward: RewardScale = CLICKS) -> tuple[float, float]:
    """The bootstrap interval of a rate-like replay metric, widened where resampling cannot see the uncertainty
    (see the module docstring): at least the Wilson interval on its support, the whole range below 2 units.
    A mean of real-valued rewards in ``[low, high]`` gets the Wilson interval of its unit-scale value, mapped
    back (the variance bound behind it holds for any value in [0, 1])."""
    low, high = bootstrap_interval
    if np.isnan(value):
        return low, high  # undefined: no interval either
    if support < 2:
        return reward.low, reward.high
    floor_low, floor_high = mean_wilson(value, support, reward)
    if np.isnan(low):
        return floor_low, floor_high
    return min(low, floor_low), max(high, floor_high)


def interval_of(draws: np.ndarray | None) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap draws (n/a without draws)."""
    return (np.nan, np.nan) if draws is None else percentiles(draws)


def percentiles(estimates: np.ndarray) -> tuple[float, float]:
    finite = estimates[np.isfinite(estimates)]
    if len(finite) < 0.5 * len(estimates):  # undefined in most resamples (e.g. AUC with one class)
        return np.nan, np.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


class RankedLists:
    """A policy's top lists in Jurity's order, each row's rank in its list, joined once with the logged events.

    Jurity's ``get_sorted_clicks`` sorts all rows by score (pandas' default sort, so ties keep pandas' order)
    and keeps the first ``k`` of each context; sorting once and keeping the rank serves every ``k``.
    """

    def __init__(self, actual: pd.DataFrame, recommendations: pd.DataFrame):
        scores = recommendations[SCORE].reset_index(drop=True)
        order = scores.sort_values(ascending=False).index.to_numpy()  # the sort get_sorted_clicks does
        ranked = recommendations[[CONTEXT_ID, ITEM_ID, SCORE]].iloc[order].reset_index(drop=True)
        ranked["rank"] = ranked.groupby(CONTEXT_ID, sort=False).cumcount() + 1
        self.ranked = ranked
        self.matched = actual.merge(ranked, on=[CONTEXT_ID, ITEM_ID], suffixes=("", "_policy"))
        self.clicks = actual[actual[SCORE].astype(bool)][[CONTEXT_ID, ITEM_ID]]
        self.clicked_ranks = self.clicks.merge(ranked[[CONTEXT_ID, ITEM_ID, "rank"]], on=[CONTEXT_ID, ITEM_ID],
                                               how="left")
        self.n_clicks = self.clicks.groupby(CONTEXT_ID, sort=False).size()

    def contributions(self, k: int) -> dict[str, pd.DataFrame]:
        """Per-context pieces of Jurity's replay metrics at ``k`` (see the module docstring).

        Returns, per metric, a frame with ``context_id`` and ``value`` (``click``/``score`` pairs for AUC and
        ``clicks``/``matched`` for CTR).
        """
        matched = self.matched[self.matched["rank"] <= k]
        ctr = matched.groupby(CONTEXT_ID, sort=False)[SCORE].agg(clicks="sum", matched="count").reset_index()
        auc = matched.rename(columns={SCORE: "click", f"{SCORE}_policy": "score"})[[CONTEXT_ID, "click", "score"]]

        ranks = self.clicked_ranks["rank"].to_numpy(dtype=float)
        in_top = ranks <= k  # NaN (not listed) compares False
        context = self.clicked_ranks[CONTEXT_ID].to_numpy()
        recall = pd.Series(in_top.astype(float)).groupby(context, sort=False).mean()
        gains = np.where(in_top, 1 / np.log2(1 + np.where(in_top, ranks, 1.0)), 0.0)
        ndcg = pd.Series(gains).groupby(context, sort=False).sum() / self.n_clicks.map(idcg)

        top = self.ranked[self.ranked["rank"] <= k]
        listed = top[top[CONTEXT_ID].isin(self.n_clicks.index)]  # contexts with both clicks and a list
        hits = listed.merge(self.clicks.assign(hit=1.0), on=[CONTEXT_ID, ITEM_ID], how="left").fillna({"hit": 0.0})
        per_list = hits.groupby(CONTEXT_ID, sort=False)["hit"]
        precision = per_list.mean()
        precision_at = per_list.cumsum() / (per_list.cumcount() + 1) * hits["hit"]
        average_precision = (precision_at.groupby(hits[CONTEXT_ID], sort=False).sum()
                             / np.minimum(k, self.n_clicks.loc[precision.index]))

        def frame(series: pd.Series) -> pd.DataFrame:
            return series.rename("value").rename_axis(CONTEXT_ID).reset_index()

        return {"CTR": ctr, "AUC": auc, "Precision": frame(precision), "Recall": frame(recall), "NDCG": frame(ndcg),
                "MAP": frame(average_precision.loc[precision.index])}


def replay_contributions(actual: pd.DataFrame, recommendations: pd.DataFrame, k: int) -> dict[str, pd.DataFrame]:
    """``RankedLists(actual, recommendations).contributions(k)``; ``actual`` and ``recommendations`` are
    ``context_id, item_id, score`` frames (the logged response, and the policy's scored lists)."""
    return RankedLists(actual, recommendations).contributions(k)


class MetricRule:
    """One of Jurity's replay metrics: its Jurity class, and how its value and interval come from its pieces."""

    def __init__(self, jurity: type):
        self.jurity = jurity


class RatioRule(MetricRule):
    """CTR: clicked over matched events, summed per context (Jurity reports 0 without a match)."""

    def value(self, part: pd.DataFrame) -> float:
        matched = part["matched"].sum()
        return float(part["clicks"].sum() / matched) if matched else 0.0

    def interval(self, part: pd.DataFrame, value: float, bootstrap: Bootstrap,
                 reward: RewardScale = CLICKS) -> tuple[tuple, int, np.ndarray | None]:
        """(interval, support, draws for paired differences)."""
        draws = bootstrap.ratio_draws(part["clicks"].to_numpy(), part["matched"].to_numpy(), part[CONTEXT_ID])
        support = int(part["matched"].sum())
        interval = interval_of(draws)
        return (honest_interval(value, interval, support, reward) if bootstrap.enabled else interval), support, draws


class AucRule(MetricRule):
    """AUC: the policy's scores of the matched events against their clicks (undefined without both classes)."""

    def value(self, part: pd.DataFrame) -> float:
        clicks = part["click"].to_numpy()
        return float(roc_auc_score(clicks, part["score"])) if 0 < clicks.sum() < len(clicks) else np.nan

    def interval(self, part: pd.DataFrame, value: float, bootstrap: Bootstrap,
                 reward: RewardScale = CLICKS) -> tuple[tuple, int, None]:
        interval = bootstrap.auc(part["click"].to_numpy(), part["score"].to_numpy(), part[CONTEXT_ID])
        clicks = int(part["click"].sum())
        if bootstrap.enabled and not np.isnan(value) and min(clicks, len(part) - clicks) < 2:
            interval = (0.0, 1.0)  # a resample keeps the one clicked (or unclicked) event or is undefined
        return interval, len(part), None


class MeanRule(MetricRule):
    """Precision, Recall, NDCG, MAP: the mean over contexts of one value per context."""

    def value(self, part: pd.DataFrame) -> float:
        return float(part["value"].mean()) if len(part) else np.nan

    def interval(self, part: pd.DataFrame, value: float, bootstrap: Bootstrap,
                 reward: RewardScale = CLICKS) -> tuple[tuple, int, None]:
        interval = bootstrap.mean(part["value"].to_numpy(), part[CONTEXT_ID])
        return (honest_interval(value, interval, len(part)) if bootstrap.enabled else interval), len(part), None


#: The registry of replay metrics, one rule each, keyed by ``config.METRIC_NAMES`` (the YAML's names).
METRIC_RULES = {"AUC": AucRule(BinaryRecoMetrics.AUC), "CTR": RatioRule(BinaryRecoMetrics.CTR),
                "Precision": MeanRule(RankingRecoMetrics.Precision), "Recall": MeanRule(RankingRecoMetrics.Recall),
                "NDCG": MeanRule(RankingRecoMetrics.NDCG), "MAP": MeanRule(RankingRecoMetrics.MAP)}
assert tuple(METRIC_RULES) == METRIC_NAMES, "every metric the config accepts has a rule"


def metric_value(name: str, part: pd.DataFrame) -> float:
    """Jurity's value of a metric from its per-context pieces (equal to Jurity's own; tested)."""
    return METRIC_RULES[name].value(part)


def replay_details(actual: pd.DataFrame, recommendations: pd.DataFrame, metrics: list[tuple[str, int]],
                   bootstrap: Bootstrap, draws: dict | None = None, reward: RewardScale = CLICKS) -> pd.DataFrame:
    """``metric, k, value, low, high, support`` for each (metric, k) pair of the policy's replay metrics
    (and, into ``draws``, CTR@k's bootstrap draws, labelled ``"CTR@<k>"``, for paired differences).

    Jurity's ``CombinedMetrics`` would give the same values but hashes whole frames for its cache and
    re-sorts the lists per metric (30 s per policy at 200k test contexts); here the lists are sorted once.
    """
    lists = RankedLists(actual, recommendations)
    rows = []
    for k in sorted({k for _, k in metrics}):
        parts = lists.contributions(k)
        for name in [name for name, at in metrics if at == k]:
            rule, part = METRIC_RULES[name], parts[name]
            value = rule.value(part)
            interval, support, resampled = rule.interval(part, value, bootstrap, reward)
            if support == 0 and not reward.binary:  # Jurity's CTR of 0 without a match: no mean reward is known
                value, interval = np.nan, (reward.low, reward.high)
            if draws is not None and resampled is not None:
                draws[f"{name}@{k}"] = resampled
            rows.append((name, k, value, *interval, support))
    return pd.DataFrame(rows, columns=["metric", "k", "value", "low", "high", "support"])
