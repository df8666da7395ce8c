"""Our numbers equal Mab2Rec's on the user's own, unscaled features.

The reference is Mab2Rec's ``benchmark`` called directly on the raw files (nothing from our featurizer): with
``features.context_scaling: none`` the pipeline must give every policy exactly Mab2Rec's metrics, on a temporal
split and on Mab2Rec's own ``cv`` folds.  The README's reproduction recipe is what is tested here.
"""

import joblib
import numpy as np
import pandas as pd
import pytest
from jurity.recommenders import BinaryRecoMetrics, RankingRecoMetrics
from mab2rec import BanditRecommender, LearningPolicy, NeighborhoodPolicy
from mab2rec.pipeline import benchmark

from pipeline.config import load_config
from pipeline.runner import run_pipeline

SEED = 7
REPLAY = {"AUC": "AUC(score)", "CTR": "CTR(score)", "Precision": "Precision", "Recall": "Recall", "NDCG": "NDCG",
          "MAP": "MAP"}
ALL_SIX = {
    "Random": {"learning_policy": "Random"},
    "Popularity": {"learning_policy": "Popularity"},
    "LinGreedy": {"learning_policy": "LinGreedy", "params": {"epsilon": 0.1}},
    "LinUCB": {"learning_policy": "LinUCB", "params": {"alpha": 1.0}},
    "LinTS": {"learning_policy": "LinTS", "params": {"alpha": 1.0}},
    "ClustersTS": {"learning_policy": "ThompsonSampling", "neighborhood_policy": "Clusters",
                   "neighborhood_params": {"n_clusters": 5}},
}
DETERMINISTIC = {"LinGreedy": {"learning_policy": "LinGreedy", "params": {"epsilon": 0.0}},
                 "LinUCB": {"learning_policy": "LinUCB", "params": {"alpha": 1.0}}}


def mab2rec_recommenders(policies: dict) -> dict:
    """Mab2Rec recommenders built here from the same YAML entries, with MABWiser's classes."""
    made = {}
    for name, entry in policies.items():
        learning = getattr(LearningPolicy, entry["learning_policy"])(**entry.get("params", {}))
        neighborhood = None
        if "neighborhood_policy" in entry:
            neighborhood = getattr(NeighborhoodPolicy, entry["neighborhood_policy"])(**entry["neighborhood_params"])
        made[name] = BanditRecommender(learning, neighborhood, top_k=5, seed=SEED)
    return made


def replay_metrics():
    return [metric(click_column="score", k=k) for k in (1, 3, 5)
            for metric in (BinaryRecoMetrics.AUC, BinaryRecoMetrics.CTR, RankingRecoMetrics.Precision,
                           RankingRecoMetrics.Recall, RankingRecoMetrics.NDCG, RankingRecoMetrics.MAP)]


@pytest.fixture
def raw_user_features(sample_files):
    """A user table as a user would bring it: numeric, not standardised (age in years, 0/1 indicators)."""
    users = pd.read_csv(sample_files / "users.csv")
    numeric = pd.get_dummies(users, columns=["gender", "location", "traffic_source", "membership"], dtype=int)
    path = sample_files / "users_numeric.csv"
    numeric.to_csv(path, index=False)
    return path


def raw_log(sample_files):
    return pd.read_csv(sample_files / "interactions.csv", parse_dates=["timestamp"]).rename(
        columns={"clicked": "response"})


def assert_equal_to_mab2rec(ours: pd.DataFrame, direct: dict, fold: int | None = None) -> int:
    replay = ours[ours["metric"].isin(list(REPLAY))]
    if fold is not None:
        replay = replay[replay["fold"] == fold]
    compared = 0
    for row in replay.itertuples():
        expected = direct[row.policy][f"{REPLAY[row.metric]}@{row.k}"]
        if np.isnan(expected):
            assert np.isnan(row.value), (row.policy, row.metric, row.k)
        else:
            assert row.value == pytest.approx(expected, abs=1e-12), (row.policy, row.metric, row.k, row.value, expected)
        compared += 1
    return compared


@pytest.mark.parametrize("engine, policies", [("mab2rec", ALL_SIX), ("fast", DETERMINISTIC)])
def test_temporal_run_on_raw_features_equals_mab2rec_benchmark(byo_config, sample_files, raw_user_features,
                                                               engine, policies):
    config = load_config(byo_config(policies=policies, evaluation__engine=engine,
                                    features__context_scaling="none",
                                    data__files__user_features=str(raw_user_features)))
    outcome = run_pipeline(config, progress=False)

    log = raw_log(sample_files)
    order = np.argsort(log["timestamp"].to_numpy(), kind="stable")
    n_test = round(len(log) * 0.25)  # byo_example.yaml: the latest 25% of events are the test set
    train, test = log.iloc[np.sort(order[:-n_test])], log.iloc[np.sort(order[-n_test:])]
    columns = ["user_id", "item_id", "response"]
    _, direct = benchmark(mab2rec_recommenders(policies), replay_metrics(), train[columns], test[columns],
                          user_features=pd.read_csv(raw_user_features))
    assert assert_equal_to_mab2rec(outcome.metrics, direct) == len(policies) * 6 * 3


def test_unshuffled_kfold_on_raw_features_equals_mab2rec_cv(byo_config, sample_files, raw_user_features):
    config = load_config(byo_config(policies=ALL_SIX, evaluation__engine="mab2rec", features__context_scaling="none",
                                    data__files__user_features=str(raw_user_features), split__method="kfold",
                                    split__n_folds=3, split__shuffle=False))
    outcome = run_pipeline(config, progress=False)
    log = raw_log(sample_files)
    _, direct = benchmark(mab2rec_recommenders(ALL_SIX), replay_metrics(), log[["user_id", "item_id", "response"]],
                          cv=3, user_features=pd.read_csv(raw_user_features))
    compared = sum(assert_equal_to_mab2rec(outcome.metrics, direct[fold], fold) for fold in range(3))
    assert compared == 3 * len(ALL_SIX) * 6 * 3


def test_standardisation_changes_contextual_policies(byo_config, raw_user_features):
    """The scaling key really reaches the policies: standardised and raw features give LinUCB different lists."""
    lists = {}
    for scaling in ("standard", "none"):
        config = load_config(byo_config(policies=DETERMINISTIC, features__context_scaling=scaling,
                                        data__files__user_features=str(raw_user_features)))
        recs = pd.read_parquet(run_pipeline(config, progress=False).path / "recommendations.parquet")
        lists[scaling] = recs[recs["policy"] == "LinUCB"]["item_id"].to_numpy()
    assert (lists["standard"] != lists["none"]).mean() > 0.05


@pytest.mark.parametrize("scaling", ["standard", "minmax"])
def test_context_scaling_is_fitted_on_training_rows_only(byo_config, sample_files, raw_user_features, scaling):
    """No leakage: the scaler's statistics are those of the training contexts, computed here from the raw files,
    although the test users are given ages no training user has."""
    log = raw_log(sample_files)
    order = np.argsort(log["timestamp"].to_numpy(), kind="stable")
    train_rows = np.sort(order[:-round(len(log) * 0.25)])
    train_users = set(log.iloc[train_rows]["user_id"])
    users = pd.read_csv(raw_user_features)
    test_only = ~users["user_id"].isin(train_users)
    assert test_only.any()
    users.loc[test_only, "age"] = 1000  # would move a scaler fitted on test rows
    users.to_csv(raw_user_features, index=False)

    config = load_config(byo_config(policies=DETERMINISTIC, features__context_scaling=scaling,
                                    data__files__user_features=str(raw_user_features)))
    outcome = run_pipeline(config, progress=False)
    featurizer = joblib.load(outcome.path / "artifacts/seed_7/fold_0/context_featurizer.joblib")
    scaler = featurizer.transformer_.named_transformers_["numeric"]
    ages = users.loc[~test_only, "age"].to_numpy(dtype=float)
    column = featurizer.numeric.index("age")
    if scaling == "standard":
        assert scaler.mean_[column] == pytest.approx(ages.mean(), rel=1e-12)
        assert scaler.scale_[column] == pytest.approx(ages.std(), rel=1e-12)
    else:
        assert scaler.data_min_[column] == ages.min() and scaler.data_max_[column] == ages.max()
