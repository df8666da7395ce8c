"""Bootstrap intervals and support: the per-context decomposition reproduces Jurity's metrics exactly."""

import numpy as np
import pandas as pd
import pytest
from jurity.recommenders import BinaryRecoMetrics, RankingRecoMetrics
from sklearn.metrics import roc_auc_score

from pipeline.uncertainty import Bootstrap, replay_contributions, replay_details

JURITY = {"CTR": BinaryRecoMetrics.CTR, "AUC": BinaryRecoMetrics.AUC, "Precision": RankingRecoMetrics.Precision,
          "Recall": RankingRecoMetrics.Recall, "NDCG": RankingRecoMetrics.NDCG, "MAP": RankingRecoMetrics.MAP}


def random_logs(seed, n_contexts, events_per_context, n_items=15, list_length=6):
    """Several logged events per context (repeated items included) and a scored top list per context."""
    rng = np.random.default_rng(seed)
    n_events = n_contexts * events_per_context
    actual = pd.DataFrame({"context_id": np.repeat(np.arange(n_contexts), events_per_context),
                           "item_id": rng.integers(n_items, size=n_events),
                           "score": (rng.random(n_events) < 0.3).astype(int)})
    lists = [rng.choice(n_items, list_length, replace=False) for _ in range(n_contexts)]
    recommendations = pd.DataFrame({"context_id": np.repeat(np.arange(n_contexts), list_length),
                                    "item_id": np.concatenate(lists),
                                    "score": np.round(rng.random(n_contexts * list_length), 2)})  # with ties
    return actual, recommendations


@pytest.mark.parametrize("events_per_context", [1, 4])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_contributions_reproduce_jurity(events_per_context, k):
    actual, recommendations = random_logs(7, 300, events_per_context)
    parts = replay_contributions(actual, recommendations, k)
    ours = {"CTR": parts["CTR"]["clicks"].sum() / parts["CTR"]["matched"].sum(),
            "AUC": roc_auc_score(parts["AUC"]["click"], parts["AUC"]["score"]),
            **{name: parts[name]["value"].mean() for name in ("Precision", "Recall", "NDCG", "MAP")}}
    for name, metric in JURITY.items():
        expected = metric(click_column="score", k=k, user_id_column="context_id").get_score(actual, recommendations)
        assert ours[name] == pytest.approx(expected, abs=1e-12), name


def test_intervals_contain_the_estimate_and_support_counts_what_decided_it():
    actual, recommendations = random_logs(8, 400, 1)
    bootstrap = Bootstrap(actual["context_id"].to_numpy(), 300, seed=1)
    details = replay_details(actual, recommendations, [(m, 3) for m in JURITY], bootstrap).set_index("metric")
    parts = replay_contributions(actual, recommendations, 3)
    assert details.loc["CTR", "support"] == parts["CTR"]["matched"].sum() == len(parts["AUC"])
    assert details.loc["Recall", "support"] == actual["score"].sum()  # one event per context: clicked contexts
    for name, metric in JURITY.items():
        value = metric(click_column="score", k=3, user_id_column="context_id").get_score(actual, recommendations)
        assert details.loc[name, "low"] <= value <= details.loc[name, "high"], name


def test_weighted_auc_matches_sklearn_on_repeated_rows():
    rng = np.random.default_rng(2)
    clicks, scores, contexts = rng.integers(2, size=60), np.round(rng.random(60), 1), np.arange(60)
    bootstrap = Bootstrap(contexts, 1, seed=0)
    weights = bootstrap.weights[0].astype(int)
    expected = roc_auc_score(np.repeat(clicks, weights), np.repeat(scores, weights))
    bootstrap._weights = np.vstack([bootstrap.weights] * 40)  # 40 identical resamples: the interval is a point
    low, high = bootstrap.auc(clicks, scores, contexts)
    assert low == pytest.approx(expected) and high == pytest.approx(expected)


def test_intervals_shrink_with_more_contexts_and_can_be_disabled():
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 10_000):
        values = rng.random(n)
        low, high = Bootstrap(np.arange(n), 200, seed=0).mean(values, np.arange(n))
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5
    assert Bootstrap(np.arange(5), 0, seed=0).mean(np.ones(5), np.arange(5)) == (pytest.approx(np.nan, nan_ok=True),) * 2


def one_event_per_context(items, clicks, lists):
    """Event-level contexts 0..n-1: the logged item and click of each, and each context's scored list."""
    actual = pd.DataFrame({"context_id": np.arange(len(items)), "item_id": items, "score": clicks})
    recommendations = pd.DataFrame([{"context_id": c, "item_id": item, "score": 1.0 - rank / 10}
                                    for c, listed in enumerate(lists) for rank, item in enumerate(listed)])
    return actual, recommendations


def details(actual, recommendations, metrics=(("CTR", 1), ("AUC", 1), ("Recall", 1))):
    bootstrap = Bootstrap(actual["context_id"].to_numpy(), 200, 0)
    return replay_details(actual, recommendations, list(metrics), bootstrap).set_index("metric")


@pytest.mark.parametrize("click, low, high", [(0, 0.0, 0.0876), (1, 0.9124, 1.0)])
def test_ctr_without_or_with_only_clicks_keeps_a_wilson_interval(click, low, high):
    """40 matched events, all unclicked (or all clicked): resampling only ever sees 0 (or 1), yet 0 of 40 is
    compatible with a CTR up to 8.8% (Wilson 95%: z^2 / (n + z^2) = 0.0876 for n = 40)."""
    actual, recs = one_event_per_context(np.ones(40, int), np.full(40, click), [[1, 2]] * 40)
    row = details(actual, recs).loc["CTR"]
    assert row["value"] == click and row["support"] == 40
    assert (row["low"], row["high"]) == pytest.approx((low, high), abs=1e-4)


def test_a_single_matched_event_gives_the_whole_range():
    items = np.r_[1, np.full(30, 9)]  # only context 0's logged item is in its list
    actual, recs = one_event_per_context(items, np.r_[1, np.zeros(30, int)], [[1, 2]] * 31)
    table = details(actual, recs)
    assert table.loc["CTR", "support"] == 1 and (table.loc["CTR", "low"], table.loc["CTR", "high"]) == (0.0, 1.0)
    assert table.loc["Recall", "support"] == 1 and (table.loc["Recall", "low"], table.loc["Recall", "high"]) == (0, 1)


def test_no_matched_event_gives_jurity_zero_with_the_whole_range():
    actual, recs = one_event_per_context(np.full(20, 9), np.r_[1, np.zeros(19, int)], [[1, 2]] * 20)
    row = details(actual, recs).loc["CTR"]
    assert (row["value"], row["support"], row["low"], row["high"]) == (0.0, 0, 0.0, 1.0)


def test_auc_resting_on_one_clicked_event_gives_the_whole_range():
    n = 30
    actual, recs = one_event_per_context(np.ones(n, int), np.r_[1, np.zeros(n - 1, int)],
                                         [[1, 2]] * n)
    recs.loc[recs["item_id"] == 1, "score"] = np.linspace(0.2, 0.9, n)  # first in every list, scores spread
    recs.loc[recs["item_id"] == 2, "score"] = 0.1
    row = details(actual, recs).loc["AUC"]
    assert not np.isnan(row["value"]) and (row["low"], row["high"]) == (0.0, 1.0)


def test_unknown_contexts_are_an_error_not_the_last_column():
    bootstrap = Bootstrap(np.array([10, 11, 12]), 50, 0)
    with pytest.raises(ValueError, match="not test contexts of this fold"):
        bootstrap.mean(np.ones(2), np.array([10, 99]))


def test_seed_summary_intervals_stay_in_the_metrics_range():
    from scipy import stats

    from pipeline.report import seed_summary

    rows = [("P", "coverage", 5, seed, value) for seed, value in zip((1, 2, 3), (0.99, 1.0, 0.995))]
    rows += [("P", "novelty", 5, seed, value) for seed, value in zip((1, 2, 3), (7.0, 7.5, 9.0))]
    rows += [("P", "AUC", 5, seed, value) for seed, value in zip((1, 2, 3), (0.4, np.nan, 0.5))]
    metrics = pd.DataFrame(rows, columns=["policy", "metric", "k", "seed", "value"])
    summary = seed_summary(metrics).set_index("metric")
    coverage = np.array([0.99, 1.0, 0.995])
    t_high = coverage.mean() + stats.t.ppf(0.975, 2) * stats.sem(coverage)
    assert t_high > 1 and summary.loc["coverage", "high"] == 1.0  # cut to the range
    assert summary.loc["coverage", "low"] == pytest.approx(coverage.mean() - (t_high - coverage.mean()))
    assert summary.loc["novelty", "high"] > 9  # unbounded above: not cut
    auc = summary.loc["AUC"]
    # Two values: no t-interval at all (on 2 values it reaches past the range), and the summary says why.
    assert (auc["n_seeds"], auc["n_undefined_seeds"]) == (2, 1)
    assert np.isnan(auc["low"]) and np.isnan(auc["high"]) and "3 needed" in auc["interval"]
    assert summary.loc["coverage", "interval"] == "t"


def test_fold_summary_counts_the_folds_behind_each_mean():
    from pipeline.report import fold_summary

    metrics = pd.DataFrame({"seed": 1, "policy": "P", "metric": "AUC", "k": 5, "fold": range(5),
                            "value": [0.6, np.nan, np.nan, np.nan, np.nan]})
    row = fold_summary(metrics).iloc[0]
    assert (row["mean"], row["n_folds"], row["n_undefined_folds"]) == (0.6, 1, 4)
