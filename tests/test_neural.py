"""NeuralLinear: posterior maths, numerical safeguards, export/import, determinism, pipeline integration."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.neural.posterior import SAFEGUARDS, BayesianLinearHead
from pipeline.neural.policy import NeuralLinear, NeuralLinearBandit

FAST = dict(embedding_dim=4, hidden=(8,), warm_start_epochs=2, retrain_every=150, retrain_epochs=1)


def test_posterior_mean_is_the_closed_form_ridge_solution():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 6))
    r = (z @ rng.normal(size=6) + rng.normal(scale=0.1, size=500) > 0).astype(float)
    head = BayesianLinearHead(6, l2_lambda=2.5)
    for start in range(0, 500, 37):  # streaming updates in uneven blocks
        head.update(z[start:start + 37], r[start:start + 37])
    ridge = np.linalg.solve(z.T @ z + 2.5 * np.eye(6), z.T @ r)
    np.testing.assert_allclose(head.mean, ridge, atol=1e-6)
    assert head.n == 500
    assert sum(head.counts.values()) == 0  # a well-conditioned problem needs no safeguard


def test_samples_follow_the_posterior():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 3))
    head = BayesianLinearHead(3, l2_lambda=1.0)
    head.update(z, z @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=2000))
    draws = head.sample(np.random.default_rng(2), size=20_000)
    np.testing.assert_allclose(draws.mean(axis=0), head.mean, atol=0.002)
    noise = (head.b0 + (head.reward_sq - head.mean @ (head.gram + np.eye(3)) @ head.mean) / 2) / (head.a0 + 1000 - 1)
    expected_cov = noise * np.linalg.inv(head.gram + np.eye(3))
    np.testing.assert_allclose(np.cov(draws.T), expected_cov, rtol=0.05, atol=0.05 * expected_cov.max())


def test_ucb_is_mean_plus_alpha_times_the_width():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5))
    head = BayesianLinearHead(5, l2_lambda=1.0)
    head.update(z, rng.random(300))
    query = rng.normal(size=(7, 5))
    inverse = np.linalg.inv(head.gram + np.eye(5))
    expected = query @ head.mean + 0.7 * np.sqrt(np.einsum("ij,jk,ik->i", query, inverse, query))
    np.testing.assert_allclose(head.ucb(query, alpha=0.7), expected, rtol=1e-10)


def test_stress_near_collinear_huge_features_never_nan_and_safeguards_fire():
    """10,000 single-event updates and posterior draws on near-collinear, huge-magnitude embeddings."""
    rng = np.random.default_rng(4)
    head = BayesianLinearHead(6, l2_lambda=1e-3)
    draws = np.empty((10_000, 6))
    for step in range(10_000):
        base = rng.normal(size=2) * 10 ** rng.uniform(0, 9)  # magnitudes up to 1e9
        z = np.array([base[0], base[0] * (1 + 1e-12), base[0] - 1e-9, base[1], base[1] * 1e6, 1.0])
        head.update(z[None], [float(rng.random() < 0.05)])
        draws[step] = head.sample(rng)[0]
    assert np.all(np.isfinite(draws)) and np.all(np.isfinite(head.mean))
    assert np.all(np.isfinite(head.ucb(draws[:50], alpha=1.0)))
    assert head.counts["ridge_raised"] > 0
    assert set(head.counts) <= set(SAFEGUARDS)


def test_stress_non_finite_statistics_are_contained():
    head = BayesianLinearHead(3)
    head.update(np.array([[1e200, 1e200, 1.0]]), [1.0])  # the square overflows
    head.update(np.array([[np.nan, 1.0, 1.0], [1.0, 2.0, 3.0]]), [0.0, 1.0])
    assert head.counts["nonfinite"] >= 2 and head.n == 1
    assert np.all(np.isfinite(head.sample(np.random.default_rng(0), size=100)))


def test_stress_through_the_whole_model_with_extreme_raw_features():
    """Collinear contexts of magnitude 1e9 and constant columns go through encoder, head and all rules."""
    rng = np.random.default_rng(6)
    base = rng.normal(size=(2000, 1)) * 1e9
    contexts = np.hstack([base, base * (1 + 1e-12), np.full((2000, 1), 7.0), rng.normal(size=(2000, 1)) * 1e-9])
    items = pd.DataFrame({"item_id": range(5), "f": [1e8, 1e8, -1e8, 0.0, 1e8 + 1]})
    engine = NeuralLinearBandit(list(range(5)), NeuralLinear(**FAST), items, seed=0)
    engine.fit(rng.integers(5, size=1000), rng.random(1000) < 0.1, contexts[:1000])
    for start in range(1000, 2000, 100):
        engine.partial_fit(rng.integers(5, size=100), rng.random(100) < 0.1, contexts[start:start + 100])
    for rule in ("mean", "ucb", "thompson"):
        assert np.all(np.isfinite(engine.scores(contexts[:300], rule))), rule
    assert set(engine.diagnostics()) >= set(SAFEGUARDS)


def _toy_problem(seed=0, n=900, n_items=12):
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": np.arange(100, 100 + n_items)})
    features = rng.normal(size=(n_items, 3))
    for j in range(3):
        items[f"f{j}"] = features[:, j]
    contexts = rng.normal(size=(n, 4))
    decisions = rng.integers(n_items, size=n)
    logits = -2 + 1.5 * contexts[:, 0] * features[decisions, 0] + features[decisions, 1]
    rewards = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)
    return items, contexts, items["item_id"].to_numpy()[decisions], rewards


def test_same_seed_same_model_and_export_import_reproduces_scores(tmp_path):
    items, contexts, decisions, rewards = _toy_problem()
    engines = []
    for _ in range(2):
        engine = NeuralLinearBandit(list(items["item_id"]), NeuralLinear(**FAST), items, seed=5)
        engine.fit(decisions, rewards, contexts)
        engines.append(engine)
    query = contexts[:25]
    np.testing.assert_array_equal(engines[0].scores(query, "mean"), engines[1].scores(query, "mean"))
    np.testing.assert_array_equal(engines[0].scores(query, "thompson"), engines[1].scores(query, "thompson"))
    assert engines[0].counts["encoder_retrains"] == 900 // 150

    engines[0].export(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"encoder.npz", "heads.json"}
    loaded = NeuralLinearBandit.load(tmp_path / "model")
    for rule in ("mean", "ucb"):
        np.testing.assert_array_equal(loaded.scores(query, rule), engines[0].scores(query, rule))
    heads = json.loads((tmp_path / "model" / "heads.json").read_text())
    assert heads["arms"] == list(range(100, 112)) and heads["policy"]["warm_start"] == "bpr"


def test_the_item_tower_is_computed_once_per_encoder_and_arm_set(monkeypatch):
    items, contexts, decisions, rewards = _toy_problem()
    engine = NeuralLinearBandit(list(items["item_id"]), NeuralLinear(**FAST), items, seed=2)
    engine.fit(decisions[:300], rewards[:300], contexts[:300])
    calls = []
    original = type(engine.encoder).item_side
    monkeypatch.setattr(type(engine.encoder), "item_side", lambda self, x: calls.append(len(x)) or original(self, x))
    first = engine.scores(contexts[:5], "mean")
    second = engine.scores(contexts[5:9], "ucb")
    assert calls == [len(engine.arms)]  # one tower for both requests
    engine._item_tower_cache = None
    np.testing.assert_array_equal(engine.scores(contexts[:5], "mean"), first)  # recomputed: same scores
    assert second.shape == (4, len(engine.arms))
    retrains = engine.counts["encoder_retrains"]
    engine.partial_fit(decisions[300:450], rewards[300:450], contexts[300:450])
    assert engine.counts["encoder_retrains"] > retrains
    calls.clear()
    engine.scores(contexts[:1], "mean")
    assert calls == [len(engine.arms)]  # the retrained encoder's tower, not the stale one


def test_partial_fit_continues_learning_and_retrains_on_schedule():
    items, contexts, decisions, rewards = _toy_problem()
    engine = NeuralLinearBandit(list(items["item_id"]), NeuralLinear(**FAST), items, seed=1)
    engine.fit(decisions[:600], rewards[:600], contexts[:600])
    assert engine.head.n == 600 and engine.counts["encoder_retrains"] == 4
    engine.partial_fit(decisions[600:], rewards[600:], contexts[600:])
    assert engine.head.n == 900 and engine.counts["encoder_retrains"] == 6


def test_learns_the_interaction_and_generalises_to_an_unseen_item():
    items, contexts, decisions, rewards = _toy_problem(n=6000)
    policy = NeuralLinear(**{**FAST, "embedding_dim": 8, "hidden": (16,), "warm_start_epochs": 10})
    engine = NeuralLinearBandit(list(items["item_id"]), policy, items, seed=0)
    engine.fit(decisions, rewards, contexts)
    features = items[["f0", "f1", "f2"]].to_numpy()
    test = np.random.default_rng(9).normal(size=(400, 4))
    truth = 1.5 * test[:, [0]] * features[None, :, 0] + features[None, :, 1]
    chosen = engine.scores(test, "mean").argmax(axis=1)
    assert truth[np.arange(400), chosen].mean() > 0.8 * truth.max(axis=1).mean()
    # An item never logged, with the features of item 100, is scored like item 100.
    engine._features["new"] = engine._features[100]
    engine.add_arm("new")
    scores = engine.scores(test[:20], "mean")
    np.testing.assert_allclose(scores[:, -1], scores[:, 0])


@pytest.mark.parametrize("params, message", [
    ({"decision": "greedy"}, "decision must be one of"),
    ({"warm_start": "simclr"}, "warm_start must be one of"),
    ({"hidden": [0]}, "hidden must be a list of positive layer widths"),
    ({"embedding_dim": 2.5}, "embedding_dim must be a positive integer"),
    ({"alpha": -1}, "alpha cannot be negative"),
])
def test_invalid_parameters_are_named(params, message, tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"policies": {"NL": {"learning_policy": "NeuralLinear", "params": params}}}))
    with pytest.raises(ConfigError, match=rf"'policies\.NL': NeuralLinear\(.*\): {message}"):
        load_config(path)


def test_neural_linear_runs_in_the_pipeline_and_writes_its_exports(write_config, tiny_settings):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    tiny_settings["policies"] = {
        "LinUCB": {"learning_policy": "LinUCB"},
        "NeuralLinear-warm": {"learning_policy": "NeuralLinear", "params": FAST},
        "NeuralLinUCB": {"learning_policy": "NeuralLinear", "params": {**FAST, "decision": "ucb"}},
    }
    outcome = run_pipeline(load_config(write_config(tiny_settings)), progress=False)
    assert {"NeuralLinear-warm", "NeuralLinUCB", "LinUCB", "Oracle", "Logging"} == set(outcome.leaderboard.index)
    assert outcome.leaderboard["true_ctr@1"].notna().all()
    for name in ("NeuralLinear-warm", "NeuralLinUCB"):
        export = outcome.path / "artifacts" / "seed_3" / "fold_0" / name
        assert (export / "encoder.npz").is_file() and (export / "heads.json").is_file()
    safeguards = pd.read_csv(outcome.path / "safeguards.csv")
    assert set(safeguards["policy"]) == {"NeuralLinear-warm", "NeuralLinUCB"}
    # The counters count: the warm start saw every click of the 1,200 training events (counted here from the
    # generated log), the encoder was retrained every 150 events, and this well-conditioned problem needed no
    # safeguard (tests above make them fire).
    log = pd.read_parquet(outcome.path / "data/seed_3/interactions.parquet")
    order = np.argsort(log["timestamp"].to_numpy(), kind="stable")
    train_clicks = int(log.iloc[order[:1200]]["response"].sum())
    for _, counters in safeguards.groupby("policy"):
        counts = counters.set_index("counter")["count"]
        assert counts["warm_start_clicks"] == train_clicks > 0
        assert counts["encoder_retrains"] == 1200 // FAST["retrain_every"]
        assert (counts[list(SAFEGUARDS)] == 0).all()
    recs = pd.read_parquet(outcome.path / "recommendations.parquet")
    assert (recs[recs["policy"] == "NeuralLinUCB"].groupby("context_id").size() == 5).all()


def test_the_encoder_regresses_real_rewards_and_classifies_clicks():
    """Rewards of 0 and 50 (revenue): the network's output approaches each item's mean reward (squared loss);
    clicks (0/1): its logit separates the items (logistic loss).  The logistic loss on 50s would diverge."""
    import torch

    from pipeline.neural.encoder import TwoTowerEncoder, train_clicks

    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(400, 2))
    items = np.repeat(np.eye(2), 200, axis=0)  # item 0 on the first 200 rows, item 1 on the rest
    for scale in (50.0, 1.0):
        torch.manual_seed(0)
        encoder = TwoTowerEncoder(2, 2, (8,), 4)
        rewards = np.where(items[:, 0] == 1, scale, 0.0)
        train_clicks(encoder, contexts, items, rewards, epochs=100, lr=0.05, batch_size=100,
                     generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = encoder.pair_logits(torch.as_tensor(contexts[:5]), torch.as_tensor(np.eye(2)[[0] * 5])).numpy()
            other = encoder.pair_logits(torch.as_tensor(contexts[:5]), torch.as_tensor(np.eye(2)[[1] * 5])).numpy()
        if scale == 50.0:
            np.testing.assert_allclose(out, 50.0, rtol=0.1)
            np.testing.assert_allclose(other, 0.0, atol=5.0)
        else:
            assert (out > 2).all() and (other < -2).all()  # logits of a near-certain click and non-click
