"""Every shipped config validates and runs (at a small size), and every registered policy - each MABWiser
learning policy, each neighborhood policy, and ours - passes one shared check suite through our pipeline."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import fake_obp_archive
from pipeline.config import EvaluationConfig, FeaturesConfig, SplitConfig, SyntheticConfig, load_config
from pipeline.data.synthetic import generate
from pipeline.evaluation import run_policy
from pipeline.features import build_fold_features, item_featurizer, item_vectors
from pipeline.policies import LEARNING_POLICIES, NEIGHBORHOOD_POLICIES, make_policy_spec
from pipeline.runner import run_pipeline
from pipeline.split import make_folds
from pipeline.uncertainty import Bootstrap
from scripts.open_bandit_dataset import main as convert_obd

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
FAST_NEURAL = {"embedding_dim": 4, "hidden": [8], "warm_start_epochs": 1, "retrain_every": 200, "retrain_epochs": 1}


def small_overrides(path: Path, output_dir: Path) -> list[str]:
    """--set values that keep a config's meaning but make it run in seconds."""
    config = load_config(path)
    sets = [f"run.output_dir={output_dir}", "evaluation.bootstrap_resamples=20", "evaluation.diversity_sample=50"]
    if config.seeds:
        sets.append(f"seeds=[{config.seeds[0]}]")
    if path.stem == "obd":  # the Open Bandit Dataset is not shipped: its layout, drawn at random, converted
        fake_obp_archive(output_dir.parent / "obp.tar.gz")
        convert_obd([str(output_dir.parent / "obp.tar.gz"), "--out", str(output_dir.parent / "obd")])
        sets += [f"data.files.interactions={output_dir.parent / 'obd' / 'random_all' / 'interactions.csv'}",
                 f"data.files.item_features={output_dir.parent / 'obd' / 'random_all' / 'items.csv'}"]
    if config.data.source == "synthetic":
        sets += ["data.synthetic.n_events=1200", "data.synthetic.n_users=200",
                 f"data.synthetic.n_items={min(config.data.synthetic.n_items, 40)}"]
    for name, policy in config.policies.items():
        if policy.learning_policy == "NeuralLinear":
            params = {**policy.params, **FAST_NEURAL}
            sets.append(f"policies.{name}.params={params}")
    if config.simulation.enabled:
        sets += ["simulation.steps=400", "simulation.warmup=100", "simulation.batch_size=100",
                 "simulation.rolling_window=100"]
        if config.simulation.scenario == "shock":
            sets.append("simulation.shock_step=200")
    sessions = config.simulation.session_comparison
    if sessions.enabled:  # a tuning seed and a reporting seed, a few hundred steps, one small test of each kind
        sets += [f"seeds={config.seeds[:2]}", "simulation.session_comparison.train_steps=300",
                 "simulation.session_comparison.cohort=20", "simulation.sessions.max_steps=4",
                 "simulation.session_comparison.ab_test.tests=1", "simulation.session_comparison.ab_test.aa_tests=1",
                 "simulation.session_comparison.ab_test.users=40",
                 "simulation.session_comparison.ab_test.enrollment_days=3",
                 "simulation.session_comparison.ab_test.window_days=2"]
    return sets


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates_and_runs_small(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the BYO example names its files relative to the repository
    config = load_config(path, small_overrides(path, tmp_path / "runs"))
    outcome = run_pipeline(config, progress=False)
    names = {spec.name for spec in config.policy_specs()}
    assert names <= set(outcome.leaderboard.index)
    assert (outcome.path / "run.json").is_file() and outcome.leaderboard.notna().any(axis=None)
    if config.simulation.enabled:
        assert outcome.simulation_summary is not None and len(outcome.simulation_summary) > 0
    if config.simulation.session_comparison.enabled:
        summary = pd.read_csv(outcome.path / "sessions_summary.csv")
        assert {"Oracle", *names, *config.simulation.session_comparison.rl_agents} == set(summary["agent"])


# --------------------------------------------------------------------------------- every policy
def _policy_cases():
    cases = [(name, {}, None, {}) for name in LEARNING_POLICIES if name != "NeuralLinear"]
    cases.append(("NeuralLinear", FAST_NEURAL, None, {}))
    neighborhoods = {"Clusters": {"n_clusters": 3}, "KNearest": {"k": 5}, "LSHNearest": {}, "Radius": {"radius": 5.0},
                     "TreeBandit": {}}
    assert set(neighborhoods) == set(NEIGHBORHOOD_POLICIES)  # a new MABWiser neighborhood policy joins the suite
    cases += [("EpsilonGreedy", {}, name, params) for name, params in neighborhoods.items()]
    return cases


@pytest.fixture(scope="module")
def small_fold():
    shop = generate(SyntheticConfig(n_users=80, n_items=12, n_events=600, n_days=3), seed=5)
    fold = make_folds(shop, "temporal", SplitConfig(), seed=5)[0]
    features = build_fold_features(shop, fold, FeaturesConfig())
    items = item_featurizer(shop, FeaturesConfig(item_text={"schema": {"transform": ["tfidf", ["svd", {
        "n_components": 3}]]}}), 5)
    return features, item_vectors(items, shop.items)


@pytest.mark.parametrize("learning, params, neighborhood, neighborhood_params", _policy_cases(),
                         ids=lambda value: value if isinstance(value, str) else "")
@pytest.mark.parametrize("engine", ["fast", "mab2rec"])
def test_every_policy_trains_recommends_and_repeats_itself(small_fold, learning, params, neighborhood,
                                                           neighborhood_params, engine):
    features, vectors = small_fold
    spec = make_policy_spec("P", learning, params, neighborhood, neighborhood_params)
    evaluation = EvaluationConfig(top_k=4, k_list=[1, 4], leaderboard_k=4, engine=engine, bootstrap_resamples=0)
    runs = [run_policy(spec, features, vectors, 0, evaluation, seed, Bootstrap(features.test["context_id"], 0, seed))
            for seed in (11, 11)]
    lists = runs[0].recommendations
    test_contexts = set(features.test["context_id"])
    assert set(lists["context_id"]) == test_contexts  # every test context gets a list
    per_context = lists.groupby("context_id")
    assert (per_context.size() == 4).all() and (per_context["item_id"].nunique() == 4).all()
    assert set(lists["item_id"]) <= set(features.train["item_id"])  # only trained items are arms
    assert (per_context["rank"].apply(list).map(lambda r: r == [0, 1, 2, 3])).all()
    scores = lists["score"].to_numpy()
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()  # Mab2Rec's sigmoid scores
    pd.testing.assert_frame_equal(runs[0].recommendations, runs[1].recommendations)  # same seed, same lists
    pd.testing.assert_frame_equal(runs[0].metrics, runs[1].metrics)
    assert set(runs[0].metrics["metric"]) == {"AUC", "CTR", "Precision", "Recall", "NDCG", "MAP"}
