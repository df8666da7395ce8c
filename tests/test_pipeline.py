"""End-to-end runs on small real data: outputs, reproducibility, splits, and agreement with Mab2Rec."""

import json

import joblib
import numpy as np
import pandas as pd
import pytest

from pipeline.data.synthetic import ClickModel

from pipeline.config import load_config
from pipeline.runner import run_pipeline

SIX = ["Random", "Popularity", "LinGreedy", "LinUCB", "LinTS", "ClustersTS"]
DEFAULT_POLICIES = SIX + ["NeuralLinear-cold", "NeuralLinear-warm", "NeuralLinUCB"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the tiny synthetic config, shared by the read-only tests below."""
    import yaml

    root = tmp_path_factory.mktemp("tiny")
    settings = {
        "seed": 3,
        "run": {"output_dir": str(root / "runs"), "name": "tiny"},
        "data": {"synthetic": {"n_users": 200, "n_items": 30, "n_events": 1500, "n_days": 7}},
        "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
        "evaluation": {"top_k": 5, "k_list": [1, 3, 5], "leaderboard_k": 3},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    config = load_config(path)
    return config, run_pipeline(config, progress=False)


def test_run_directory_holds_every_output(tiny_run):
    _, outcome = tiny_run
    names = {p.relative_to(outcome.path).as_posix() for p in outcome.path.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.parquet", "metrics.csv", "leaderboard.csv", "recommendations.parquet",
            "off_policy.csv", "off_policy_summary.csv", "safeguards.csv",
            "timings.json", "versions.json", "run.json", "artifacts/seed_3/click_model.npz",
            "artifacts/seed_3/item_featurizer.joblib", "artifacts/seed_3/fold_0/context_featurizer.joblib",
            "data/seed_3/interactions.parquet"} <= names
    run = json.loads((outcome.path / "run.json").read_text())
    assert run["status"] == "complete" and run["seeds"] == [3] and run["split"] == "temporal"
    assert run["folds"] == [{"seed": 3, "fold": 0, "n_train": 1200, "n_test": 300, "n_test_contexts": 300}]
    versions = json.loads((outcome.path / "versions.json").read_text())
    assert versions["mab2rec"] == "1.3.1" and versions["pandas"].startswith("2.3")
    timings = json.loads((outcome.path / "timings.json").read_text())
    assert {"data", "split", "item_features", "context_features", "policy:LinUCB", "ground_truth", "off_policy",
            "total"} <= set(timings)
    assert not list(outcome.path.parent.glob(".partial-*"))


def test_metrics_table_is_long_and_complete(tiny_run):
    _, outcome = tiny_run
    metrics = pd.read_parquet(outcome.path / "metrics.parquet")
    assert list(metrics.columns) == ["run", "seed", "policy", "metric", "k", "fold", "value", "low", "high", "support"]
    assert (metrics["support"] > 0).all()
    decided = metrics.dropna(subset=["low"])
    assert ((decided["low"] <= decided["value"] + 1e-12) & (decided["value"] <= decided["high"] + 1e-12)).mean() > 0.95
    pd.testing.assert_frame_equal(metrics, pd.read_csv(outcome.path / "metrics.csv"), rtol=1e-12)
    assert set(metrics["policy"]) == set(DEFAULT_POLICIES) | {"Oracle", "Logging"}
    # The logging policy is a row: uniform logging's true value is the mean click probability of every item,
    # recomputed here from the saved click model on the test events.
    logging = metrics[metrics["policy"] == "Logging"]
    assert set(logging["metric"]) == {"true_ctr"} and sorted(logging["k"]) == [1, 3, 5]
    model = ClickModel.load(outcome.path / "artifacts/seed_3/click_model.npz")
    events = pd.read_parquet(outcome.path / "data/seed_3/interactions.parquet").tail(300)
    assert logging["value"].iloc[0] == pytest.approx(model.probabilities(events).mean(), rel=1e-9)
    for policy in DEFAULT_POLICIES + ["Oracle"]:
        rows = metrics[metrics["policy"] == policy]
        for name in ("AUC", "CTR", "Precision", "Recall", "NDCG", "MAP"):
            assert sorted(rows.loc[rows["metric"] == name, "k"]) == [1, 3, 5]
        for name in ("true_ctr", "true_hit_rate", "true_regret"):
            assert sorted(rows.loc[rows["metric"] == name, "k"]) == [1, 3, 5]


def test_leaderboard_has_every_policy_truth_columns_and_oracle_last(tiny_run):
    _, outcome = tiny_run
    table = outcome.leaderboard
    assert list(table.index)[-1] == "Oracle" and set(table.index) == set(DEFAULT_POLICIES) | {"Oracle", "Logging"}
    assert {"AUC@3", "CTR@3", "Precision@3", "Recall@3", "NDCG@3", "MAP@3", "true_ctr@1", "true_ctr@3",
            "true_hit_rate@3", "true_regret@1", "DR@3", "SNIPS@3"} <= set(table.columns)
    # Columns in order of trust: the decision's metric, truth, off-policy, then replay.
    assert table.columns[0] == "true_ctr@3" and list(table.columns).index("DR@3") < list(table.columns).index("AUC@3")
    assert table.loc["Logging", "DR@3"] == table.loc["Logging", "SNIPS@3"]  # its observed click rate
    policies = table.drop(index=["Oracle", "Logging"])
    assert table.drop(index="Oracle")["true_ctr@3"].is_monotonic_decreasing
    assert (table.loc["Oracle", "true_ctr@1"] >= policies["true_ctr@1"]).all()
    assert table.loc["Oracle", "true_regret@1"] == 0
    np.testing.assert_allclose(policies["true_regret@1"], table.loc["Oracle", "true_ctr@1"] - policies["true_ctr@1"])
    saved = pd.read_csv(outcome.path / "leaderboard.csv").set_index("policy")
    np.testing.assert_allclose(saved.loc[table.index, "true_ctr@1"], table["true_ctr@1"])


def test_recommendations_are_ranked_top_k_lists(tiny_run):
    _, outcome = tiny_run
    recs = pd.read_parquet(outcome.path / "recommendations.parquet")
    assert list(recs.columns) == ["seed", "fold", "policy", "rank", "context_id", "item_id", "score"]
    per_list = recs.groupby(["policy", "context_id"])
    assert (per_list.size() == 5).all()
    assert (per_list["rank"].apply(lambda r: list(r) == [0, 1, 2, 3, 4])).all()
    assert (per_list["item_id"].nunique() == 5).all()
    linucb = recs[recs["policy"] == "LinUCB"]
    assert (linucb.groupby("context_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_same_config_and_seed_give_identical_results(tiny_run):
    config, first = tiny_run
    second = run_pipeline(config, progress=False)
    assert second.path != first.path
    columns = ["policy", "metric", "k", "fold", "value"]
    pd.testing.assert_frame_equal(first.metrics[columns], second.metrics[columns])
    pd.testing.assert_frame_equal(pd.read_parquet(first.path / "recommendations.parquet"),
                                  pd.read_parquet(second.path / "recommendations.parquet"))


def test_a_different_seed_changes_the_data_and_metrics(tiny_run):
    config, first = tiny_run
    other = run_pipeline(config.model_copy(update={"seed": 4}), progress=False)
    assert not np.allclose(first.metrics["value"], other.metrics["value"], equal_nan=True)


def test_saved_featurizers_featurize_a_new_context_the_same_way(tiny_run):
    _, outcome = tiny_run
    featurizer = joblib.load(outcome.path / "artifacts/seed_3/fold_0/context_featurizer.joblib")
    new_context = pd.DataFrame([{"device": "mobile", "daypart": "evening", "is_weekend": True, "age": 30,
                                 "gender": "female", "location": "urban", "traffic_source": "ads",
                                 "membership": "gold", "preferred_device": "mobile"}])
    vector = featurizer.transform(new_context)
    assert vector.shape == (1, len(featurizer.feature_names_))
    assert vector[0, featurizer.feature_names_.index("device_mobile")] == 1
    assert vector[0, featurizer.feature_names_.index("daypart_morning")] == 0
    items = joblib.load(outcome.path / "artifacts/seed_3/item_featurizer.joblib")
    saved_vectors = pd.read_parquet(outcome.path / "artifacts/seed_3/item_vectors.parquet")
    catalog = pd.read_parquet(outcome.path / "data/seed_3/items.parquet")
    np.testing.assert_allclose(items.transform(catalog), saved_vectors.drop(columns="item_id").to_numpy())


def test_kfold_split_keeps_each_user_on_one_side(byo_config):
    config = load_config(byo_config(split__method="kfold", split__n_folds=3))
    outcome = run_pipeline(config, progress=False)
    run = json.loads((outcome.path / "run.json").read_text())
    assert [fold["fold"] for fold in run["folds"]] == [0, 1, 2]
    assert sum(fold["n_test"] for fold in run["folds"]) == 4000
    recs = pd.read_parquet(outcome.path / "recommendations.parquet")
    tested_users = [set(recs.loc[recs["fold"] == fold, "context_id"]) for fold in range(3)]
    assert not (tested_users[0] & tested_users[1]) and not (tested_users[1] & tested_users[2])
    assert sorted(outcome.metrics["fold"].unique()) == [0, 1, 2]
    assert len(outcome.leaderboard) == 6


def test_separate_train_and_test_files(byo_config, sample_files):
    log = pd.read_csv(sample_files / "interactions.csv")
    log.iloc[:3000].to_parquet(sample_files / "train.parquet")
    log.iloc[3000:].to_parquet(sample_files / "test.parquet")
    files = {"train": str(sample_files / "train.parquet"), "test": str(sample_files / "test.parquet"),
             "user_features": str(sample_files / "users.csv"), "item_features": str(sample_files / "items.csv"),
             "columns": {"response": "clicked"}}
    outcome = run_pipeline(load_config(byo_config(data__files=files, split__method=None)), progress=False)
    run = json.loads((outcome.path / "run.json").read_text())
    assert run["split"] == "given"
    assert run["folds"][0]["n_train"] == 3000 and run["folds"][0]["n_test"] == 1000


def test_event_context_and_time_flags_make_events_the_contexts(byo_config, sample_files):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path)
    log["page"] = np.where(log.index % 3 == 0, "home", "search")
    log.to_csv(path, index=False)
    config = load_config(byo_config(data__files__event_context=["page"], features__time_flags=True))
    outcome = run_pipeline(config, progress=False)
    featurizer = joblib.load(outcome.path / "artifacts/seed_7/fold_0/context_featurizer.joblib")
    assert {"page_home", "daypart_evening", "is_weekend", "age"} <= set(featurizer.feature_names_)
    run = json.loads((outcome.path / "run.json").read_text())
    assert run["folds"][0]["n_test_contexts"] == run["folds"][0]["n_test"] == 1000


def test_a_failure_mid_run_leaves_no_run_directory(tiny_config, monkeypatch, tmp_path):
    import pipeline.executor

    calls = []

    def fail_on_third_policy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    real = pipeline.executor.run_policy
    monkeypatch.setattr(pipeline.executor, "run_policy", fail_on_third_policy)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(load_config(tiny_config), progress=False)
    assert [p for p in (tmp_path / "runs").iterdir() if p.name != ".cache"] == []


def test_warm_start_of_cold_items_uses_the_item_vectors(byo_config, sample_files):
    path = sample_files / "interactions.csv"
    log = pd.read_csv(path, parse_dates=["timestamp"])
    cutoff = log["timestamp"].quantile(0.75)
    log[(log["timestamp"] > cutoff) | (log["item_id"] != 3)].to_csv(path, index=False)  # item 3 is cold
    warm = byo_config(evaluation__warm_start=True, evaluation__warm_start_distance=1.0)
    outcome = run_pipeline(load_config(warm), progress=False)
    recs = pd.read_parquet(outcome.path / "recommendations.parquet")
    assert 3 in set(recs.loc[recs["policy"] == "LinUCB", "item_id"])  # warm-started, so it can be shown
    cold = run_pipeline(load_config(byo_config()), progress=False)
    cold_recs = pd.read_parquet(cold.path / "recommendations.parquet")
    assert 3 not in set(cold_recs["item_id"])  # Mab2Rec only recommends items it was trained on


def test_default_item_text_columns_are_skipped_when_absent(byo_config, sample_files):
    path = sample_files / "items.csv"
    pd.read_csv(path).drop(columns=["name", "description"]).to_csv(path, index=False)
    outcome = run_pipeline(load_config(byo_config(features__item_text={})), progress=False)
    vectors = pd.read_parquet(outcome.path / "artifacts/seed_7/item_vectors.parquet")
    assert not any(column.startswith("text_") for column in vectors.columns)
    assert {"category_books", "price"} <= set(vectors.columns)
