"""Diversity, catalog coverage and novelty of recommendation lists."""

import numpy as np
import pandas as pd
import pytest
from jurity.recommenders import DiversityRecoMetrics

from pipeline.beyond_accuracy import beyond_accuracy_rows


def lists(rows):
    """[(context, [items...]), ...] -> ranked recommendation frame."""
    return pd.DataFrame([{"context_id": c, "item_id": item, "score": 1.0 - r / 10, "rank": r}
                         for c, items in rows for r, item in enumerate(items)])


def test_coverage_novelty_and_diversity_by_hand():
    recs = lists([(0, [1, 2]), (1, [1, 3]), (2, [1, 2])])
    train_items = pd.Series([1] * 6 + [2] * 2)  # item 1 is popular, 2 rare, 3 never logged
    vectors = pd.DataFrame({"item_id": [1, 2, 3, 4], "a": [1.0, 0.0, 1.0, 0.5], "b": [0.0, 1.0, 1.0, 0.5]})
    rows = beyond_accuracy_rows(recs, train_items, catalog_size=4, item_vectors=vectors, k_list=[1, 2],
                                sample=100, seed=0, policy="P", fold=0).set_index(["metric", "k"])["value"]
    assert rows[("coverage", 1)] == 0.25 and rows[("coverage", 2)] == 0.75
    p = {1: 7 / 12, 2: 3 / 12, 3: 1 / 12}  # add-one smoothed shares of the 8 training events over 4 items
    assert rows[("novelty", 1)] == pytest.approx(-np.log2(p[1]))
    assert rows[("novelty", 2)] == pytest.approx(np.mean([-np.log2(p[i]) for i in (1, 2, 1, 3, 1, 2)]))
    assert rows[("inter_list_diversity", 1)] == pytest.approx(0.0)  # everyone gets item 1 first
    assert ("intra_list_diversity", 1) not in rows  # a one-item list has no pairs
    expected = DiversityRecoMetrics.IntraListDiversity(vectors, click_column="score", k=2, user_id_column="context_id",
                                                       user_sample_size=3, seed=0, num_runs=3)
    predicted = recs[["context_id", "item_id", "score"]]
    assert rows[("intra_list_diversity", 2)] == pytest.approx(expected.get_score(predicted, predicted))
    # Lists {1,2}, {1,3}, {1,2} as item indicator vectors: cosine distances 0.5, 0 and 0.5 between the pairs.
    assert rows[("inter_list_diversity", 2)] == pytest.approx(1 / 3)


def test_pipeline_reports_beyond_accuracy_for_every_policy(tmp_path, write_config, tiny_settings):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    tiny_settings["policies"] = {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}}
    outcome = run_pipeline(load_config(write_config(tiny_settings)), progress=False)
    beyond = outcome.metrics[outcome.metrics["metric"].isin(["coverage", "novelty", "inter_list_diversity"])]
    assert set(beyond["policy"]) == {"Random", "LinUCB", "Oracle"}
    coverage = beyond[(beyond["metric"] == "coverage") & (beyond["k"] == 5)].set_index("policy")["value"]
    assert coverage["Random"] == 1.0  # 300 random lists of 5 over 30 items cover the catalog
    assert {"coverage@3", "novelty@3", "inter_list_diversity@3", "intra_list_diversity@3"} <= set(outcome.leaderboard)
