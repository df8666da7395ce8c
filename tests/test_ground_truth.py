"""Ground-truth scores of recommendation lists, checked against a direct computation."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import FeaturesConfig, SplitConfig, SyntheticConfig
from pipeline.data.synthetic import generate
from pipeline.evaluation import GroundTruth
from pipeline.features import build_fold_features
from pipeline.split import make_folds
from pipeline.uncertainty import Bootstrap


@pytest.fixture(scope="module")
def fold_truth():
    shop = generate(SyntheticConfig(n_users=100, n_items=25, n_events=1000), seed=2)
    fold = make_folds(shop, "temporal", SplitConfig(), seed=2)[0]
    features = build_fold_features(shop, fold, FeaturesConfig())
    return shop, features, GroundTruth(shop, features, [1, 2, 4], top_k=4), Bootstrap(features.test["context_id"], 100, 0)


def test_oracle_takes_the_best_items_and_has_zero_regret(fold_truth):
    shop, features, truth, bootstrap = fold_truth
    oracle = truth.oracle(fold=0)
    events = shop.interactions.iloc[features.test["event_id"]]
    probabilities = shop.click_model.probabilities(events)
    np.testing.assert_allclose(oracle.groupby("context_id", sort=False)["score"].first(), probabilities.max(axis=1))
    rows = truth.metric_rows(oracle, "Oracle", 0, bootstrap).set_index(["metric", "k"])["value"]
    assert rows[("true_regret", 1)] == 0 and rows[("true_regret", 4)] == 0
    assert rows[("true_ctr", 1)] == pytest.approx(probabilities.max(axis=1).mean())


def test_policy_scores_match_a_direct_computation(fold_truth):
    shop, features, truth, bootstrap = fold_truth
    truth.oracle(fold=0)
    rng = np.random.default_rng(0)
    events = features.test["event_id"].to_numpy()
    lists = np.array([rng.choice(shop.items["item_id"], 4, replace=False) for _ in events])
    recs = pd.DataFrame({"rank": np.tile(np.arange(4), len(events)), "context_id": np.repeat(events, 4),
                         "item_id": lists.ravel(), "score": 0.0})
    rows = truth.metric_rows(recs, "Mine", 0, bootstrap).set_index(["metric", "k"])["value"]

    logged = shop.interactions.iloc[events]
    slot = np.column_stack([shop.click_model.probability_of(logged, lists[:, r]) for r in range(4)])
    assert rows[("true_ctr", 1)] == pytest.approx(slot[:, 0].mean(), rel=1e-12)
    assert rows[("true_ctr", 4)] == pytest.approx(slot.mean(), rel=1e-12)
    assert rows[("true_hit_rate", 2)] == pytest.approx((1 - (1 - slot[:, 0]) * (1 - slot[:, 1])).mean(), rel=1e-12)
    best = shop.click_model.probabilities(logged).max(axis=1)  # every item scored: not the Oracle's own code path
    assert rows[("true_regret", 1)] == pytest.approx(best.mean() - slot[:, 0].mean(), rel=1e-12)
    full = truth.metric_rows(recs, "Mine", 0, bootstrap).set_index(["metric", "k"])
    assert (full["low"] < full["value"]).loc["true_ctr"].all() and (full["value"] < full["high"]).loc["true_ctr"].all()
    assert (full["support"] == len(events)).all()


def test_missing_slots_earn_nothing(fold_truth):
    shop, features, truth, bootstrap = fold_truth
    truth.oracle(fold=0)
    event = features.test["event_id"].iloc[0]
    recs = pd.DataFrame({"rank": [0], "context_id": [event], "item_id": [1], "score": [1.0]})
    rows = truth.metric_rows(recs, "Sparse", 0, bootstrap).set_index(["metric", "k"])["value"]
    only = shop.click_model.probability_of(shop.interactions.iloc[[event]], np.array([1]))[0]
    assert rows[("true_ctr", 1)] == pytest.approx(only / len(features.test))  # every other list is empty
    assert rows[("true_ctr", 4)] == pytest.approx(only / len(features.test) / 4)


def test_oracle_on_a_sample_of_events_bounds_its_cost_and_says_so(fold_truth):
    shop, features, full, bootstrap = fold_truth
    sampled = GroundTruth(shop, features, [1, 2, 4], top_k=4, oracle_events=50, seed=3)
    assert len(sampled.oracle(fold=0)) == 50 * 4
    oracle = sampled.metric_rows(sampled.oracle(fold=0), "Oracle", 0, bootstrap).set_index(["metric", "k"])
    assert (oracle["support"] == 50).all() and (oracle.loc["true_regret", "value"] == 0).all()
    chosen = shop.interactions.set_index("event_id").loc[sampled.oracle_events].reset_index()
    best_two = np.sort(shop.click_model.probabilities(chosen), axis=1)[:, -2:].mean(axis=1)
    assert oracle.loc[("true_ctr", 2), "value"] == pytest.approx(best_two.mean(), rel=1e-12)
    policy = sampled.metric_rows(full.oracle(fold=0), "AnyPolicy", 0, bootstrap).set_index(["metric", "k"])
    assert policy.loc[("true_ctr", 1), "support"] == len(features.test)  # a policy's truth stays on every event
    assert policy.loc[("true_regret", 1), "support"] == 50
    events = np.isin(full.events, sampled.oracle_events)
    np.testing.assert_allclose(sampled.oracle_ctr[2], full.oracle_ctr[2][events])
