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
