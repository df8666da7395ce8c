"""Off-policy estimators against brute-force formulas, Jurity, and the truth of simulated logs."""

import json

import numpy as np
import pandas as pd
import pytest
from jurity.recommenders import BinaryRecoMetrics

from pipeline.config import OffPolicyConfig
from pipeline.features import FoldFeatures
from pipeline.offpolicy import (ESTIMATORS, CrossFittedRewardModel, LoggedFeedback, LoggedTestEvents,
                                logging_policy_estimates, policy_estimates, summarise_against_truth, target_terms)
from pipeline.offpolicy.diagnostics import overlap
from pipeline.offpolicy.intervals import estimate
from pipeline.scoring import LinearScorer, RandomScorer, ScoringInput, ThompsonScorer
from pipeline.uncertainty import Bootstrap

SETTINGS = OffPolicyConfig(cross_fit=1)


# ------------------------------------------------------------------------- a hand-made log, brute force
def hand_made_log() -> LoggedFeedback:
    """Six events over four contexts (context 1 has two events), rewards, propensities, pi and r_hat by hand."""
    return LoggedFeedback(context=np.array([0, 1, 1, 2, 3, 3]), reward=np.array([1.0, 0, 1, 0, 1, 0]),
                          propensity=np.array([0.5, 0.25, 0.2, 0.5, 0.1, 0.4]),
                          target=np.array([1.0, 0.0, 0.5, 0.25, 0.5, 0.0]),
                          reward_hat=np.array([0.3, 0.2, 0.6, 0.1, 0.4, 0.5]),
                          direct=np.array([0.35, 0.5, 0.5, 0.2, 0.45, 0.45]), n_contexts=4)


def brute_force(name: str, log: LoggedFeedback, tau: float) -> float:
    """Each estimator's formula written as a loop over events (the docstrings of estimators.py)."""
    n = len(log.reward)
    w = [log.target[e] / log.propensity[e] for e in range(n)]
    r, r_hat, d = log.reward, log.reward_hat, log.direct
    if name == "IPS":
        return sum(w[e] * r[e] for e in range(n)) / n
    if name == "SNIPS":
        return sum(w[e] * r[e] for e in range(n)) / sum(w)
    if name == "DR":
        return sum(d[e] + w[e] * (r[e] - r_hat[e]) for e in range(n)) / n
    if name == "SNDR":
        return sum(d) / n + sum(w[e] * (r[e] - r_hat[e]) for e in range(n)) / sum(w)
    if name == "SwitchDR":
        return sum(d[e] + (w[e] if w[e] <= tau else 0) * (r[e] - r_hat[e]) for e in range(n)) / n
    raise KeyError(name)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_each_estimator_equals_its_formula_on_a_hand_made_log(name):
    log = hand_made_log()
    estimator = ESTIMATORS[name](4.0) if name == "SwitchDR" else ESTIMATORS[name]()
    # Hand values: w = [2, 0, 2.5, 0.5, 5, 0]; sum w r = 2 + 2.5 + 5 = 9.5
    expected = {"IPS": 9.5 / 6, "SNIPS": 9.5 / 10}
    if name in expected:
        assert estimator.estimate(log) == pytest.approx(expected[name], rel=1e-12)
    assert estimator.estimate(log) == pytest.approx(brute_force(name, log, tau=4.0), rel=1e-12)


def test_switch_dr_drops_the_correction_of_large_weights_only():
    log = hand_made_log()
    no_switch = ESTIMATORS["SwitchDR"](1e9).estimate(log)
    assert no_switch == pytest.approx(ESTIMATORS["DR"]().estimate(log), rel=1e-12)
    # tau = 4 drops event 4 (w = 5): DR minus its correction 5 * (1 - 0.4) / 6
    assert ESTIMATORS["SwitchDR"](4.0).estimate(log) == pytest.approx(no_switch - 5 * 0.6 / 6, rel=1e-12)


def test_diagnostics_on_the_hand_made_log():
    log = hand_made_log()
    found = overlap(log, np.array([0, 0, 0, 0, 0.5, 0.5]), OffPolicyConfig())
    assert found["matched_events"] == 4
    assert found["effective_sample_size"] == pytest.approx(10 ** 2 / (4 + 6.25 + 0.25 + 25))
    assert found["max_weight"] == 5 and found["max_weight_share"] == pytest.approx(0.5)
    assert found["unsupported_share"] == pytest.approx(1 / 6)
    assert not found["reliable"] and "effective sample size" in found["flag"] and "50%" in found["flag"]


# ------------------------------------------------------------------------------------ simulated logs
def simulated_log(rng, true, propensities=None):
    """One event per context; the item drawn from ``propensities`` (rows; uniform if None); rewards from ``true``."""
    n_contexts, n_items = true.shape
    policy = np.full(true.shape, 1 / n_items) if propensities is None else propensities
    cumulative = policy.cumsum(axis=1)
    logged = np.minimum((cumulative < rng.random(n_contexts)[:, None]).sum(axis=1), n_items - 1)
    reward = (rng.random(n_contexts) < true[np.arange(n_contexts), logged]).astype(int)
    contexts = pd.DataFrame({"context_id": np.arange(n_contexts), "x": rng.normal(size=n_contexts)})
    frame = pd.DataFrame({"context_id": np.arange(n_contexts), "item_id": logged, "response": reward,
                          "event_id": np.arange(n_contexts)})
    train = frame.assign(context_id=frame["context_id"] + n_contexts)  # a disjoint training period
    train_contexts = contexts.assign(context_id=contexts["context_id"] + n_contexts)
    features = FoldFeatures(pd.concat([contexts, train_contexts], ignore_index=True), train, frame, None)
    return features, policy[np.arange(n_contexts), logged]


def lists(choice: np.ndarray) -> pd.DataFrame:
    """Ranked lists (one row per context and rank) from a (contexts, k) array of items."""
    n, k = choice.shape
    return pd.DataFrame({"rank": np.tile(np.arange(k), n), "context_id": np.repeat(np.arange(n), k),
                         "item_id": choice.ravel(), "score": 1.0})


def estimates_for(features, propensity, recommendations, ks, reward_model="item_mean", cross_fit=1, seed=0,
                  bootstrap=None):
    model = CrossFittedRewardModel(reward_model, cross_fit, seed).fit(features)
    logged = LoggedTestEvents.build(features, propensity, model)
    targets = target_terms(recommendations, None, None, logged.test, ks, model, logged.logged_items, 1, seed)
    rows, draws = policy_estimates(targets, logged, OffPolicyConfig(cross_fit=cross_fit), 8, bootstrap, "P", 0)
    return rows.set_index(["k", "estimator"]), draws


def test_ips_and_dr_equal_jurity_for_a_deterministic_first_item():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.02, 0.4, size=(400, 8))
    features, propensity = simulated_log(rng, true)
    choice = rng.integers(8, size=(400, 1))
    rows, _ = estimates_for(features, propensity, lists(choice), [1])
    actual = features.test.rename(columns={"response": "score"}).assign(propensity=propensity)
    model = CrossFittedRewardModel("item_mean", 1, 0).fit(features)
    predicted = lists(choice).assign(score=model.predict(np.arange(400), choice[:, 0]))
    for name in ("IPS", "DR"):
        jurity = BinaryRecoMetrics.CTR(click_column="score", k=1, user_id_column="context_id", estimation=name.lower(),
                                       propensity_column="propensity").get_score(actual, predicted)
        assert rows.loc[(1, name), "value"] == pytest.approx(jurity, rel=1e-10), name


def softmax_propensities(rng, shape, temperature=1.5):
    logits = rng.normal(scale=temperature, size=shape)
    policy = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return 0.9 * policy + 0.1 / shape[1]


@pytest.mark.parametrize("logging", ["uniform", "softmax"])
def test_unbiased_with_honest_intervals_for_first_item_and_list(logging):
    """200 logs of the same contexts: every estimator (k = 1 and a top-3 list) centred on the truth and its 95%
    intervals covering it at least 90% of the time, not wider than twice what an exact interval would need.

    The truth is computed here from the simulation's own probabilities: mean over contexts of the mean true click
    probability of the listed items."""
    rng = np.random.default_rng(2)
    true = rng.uniform(0.05, 0.6, size=(300, 8))
    order = np.argsort(-true, axis=1)
    choice = np.where(rng.random((300, 1)) < 0.7, order[:, :3], order[:, 3:6])  # good but imperfect lists
    truth = {1: true[np.arange(300), choice[:, 0]].mean(),
             3: np.take_along_axis(true, choice, axis=1).mean()}
    propensities = softmax_propensities(rng, true.shape) if logging == "softmax" else None
    found = []
    for _ in range(200):
        features, propensity = simulated_log(rng, true, propensities)
        rows, _ = estimates_for(features, propensity, lists(choice), [1, 3], reward_model="logistic", cross_fit=2)
        found.append(rows.reset_index())
    results = pd.concat(found)
    for (k, name), group in results.groupby(["k", "estimator"]):
        spread = group["value"].std()
        bias_allowance = 0.02 if name in ("SNIPS", "SNDR") else 0  # consistent, not unbiased
        if name != "SwitchDR":  # biased by design where weights exceed tau; its interval accounts for it
            assert abs(group["value"].mean() - truth[k]) < 4 * spread / np.sqrt(len(group)) + bias_allowance, (k, name)
        coverage = ((group["low"] <= truth[k]) & (truth[k] <= group["high"])).mean()
        assert coverage >= 0.90, (k, name, coverage)
        if name == "SwitchDR":  # widened by the corrections it dropped: no wider than DR's own interval needs
            spread = results[(results["k"] == k) & (results["estimator"] == "DR")]["value"].std()
        assert (group["high"] - group["low"]).mean() <= 2 * (2 * 1.96 * spread), (k, name)
        assert ((0 <= group["low"]) & (group["high"] <= 1)).all()


def test_random_policy_uses_every_event_not_one_sampled_item():
    """Random's action probabilities are 1/n for every arm: every logged event counts (weight 1 under uniform
    logging), so IPS equals the observed click rate exactly, instead of resting on the ~1/n events its one
    sampled list happened to match."""
    rng = np.random.default_rng(4)
    true = rng.uniform(0.05, 0.5, size=(500, 8))
    features, propensity = simulated_log(rng, true)
    model = CrossFittedRewardModel("item_mean", 1, 0).fit(features)
    logged = LoggedTestEvents.build(features, propensity, model)
    inputs = ScoringInput(np.arange(500), np.zeros((500, 0)))
    targets = target_terms(None, RandomScorer(list(range(8))), inputs, logged.test, [1, 3], model,
                           logged.logged_items, 10, 0)
    assert np.allclose(targets[1].probability, 1 / 8) and np.allclose(targets[3].probability, 1 / 8)
    rows, _ = policy_estimates(targets, logged, SETTINGS, 8, None, "Random", 0)
    ips = rows.set_index(["k", "estimator"]).loc[(1, "IPS")]
    assert ips["value"] == pytest.approx(features.test["response"].mean())
    assert ips["matched_events"] == 500 and ips["effective_sample_size"] == pytest.approx(500)


def test_epsilon_greedy_and_thompson_probabilities():
    """epsilon-greedy: (1 - eps) on the greedy list (split over its k slots) plus eps/n everywhere; Thompson
    sampling: Monte Carlo frequencies close to the probabilities computed here by numerical integration."""
    contexts = np.array([[1.0, 0.0], [0.0, 1.0]])
    betas = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 1.0], [0.2, 0.1]])
    greedy = LinearScorer(list("abcd"), betas, None, "greedy", epsilon=0.2)
    test = pd.DataFrame({"context_id": [0, 0, 1], "item_id": ["a", "b", "c"]})

    class Constant:
        def predict_matrix(self, contexts, items):
            return np.full((len(contexts), len(items)), 0.5)

    inputs = ScoringInput(np.array([0, 1]), contexts)
    targets = target_terms(None, greedy, inputs, test, [1, 2], Constant(), set("abcd"), 1, 0)
    assert targets[1].probability == pytest.approx([0.8 + 0.05, 0.05, 0.85])
    assert targets[2].probability == pytest.approx([0.4 + 0.05, 0.45, 0.45])  # context 0: a then b; context 1: c, b

    thompson = ThompsonScorer(list("ab"), np.array([[3.0, 2.0]]), np.array([[2.0, 3.0]]))  # Beta(3,2) vs Beta(2,3)
    targets = target_terms(None, thompson, ScoringInput(np.arange(1), np.zeros((1, 0))),
                           pd.DataFrame({"context_id": [0], "item_id": ["a"]}), [1], Constant(), set("ab"), 4000, 1)
    grid = np.linspace(0, 1, 20001)
    from scipy import stats

    exact = np.trapezoid(stats.beta(3, 2).pdf(grid) * stats.beta(2, 3).cdf(grid), grid)  # P(X_a > X_b)
    assert targets[1].probability[0] == pytest.approx(exact, abs=0.025)
    assert targets[1].method == "Monte Carlo, 4000 draws per context"


def test_cross_fitted_reward_model_never_predicts_an_event_it_was_fitted_on():
    """item_mean with two parts: each test context's r_hat is the shrunk item rate over the training rows plus
    the other part's test rows, recomputed here by hand."""
    rng = np.random.default_rng(6)
    features, _ = simulated_log(rng, rng.uniform(0.05, 0.5, size=(200, 4)))
    model = CrossFittedRewardModel("item_mean", 2, 3).fit(features)
    test = features.test
    predicted = model.predict(test["context_id"], test["item_id"])
    part = model.part_of_.loc[test["context_id"]].to_numpy()
    assert set(part) == {0, 1}
    for event in (0, 57, 199):
        rows = pd.concat([features.train, test[part != part[event]]])
        prior = rows["response"].mean()
        item = rows[rows["item_id"] == test["item_id"].iloc[event]]["response"]
        assert predicted[event] == pytest.approx((item.sum() + 10 * prior) / (len(item) + 10))
    assert model.description == "item_mean, 2-fold cross-fitted"


def test_draws_are_paired_and_the_logging_policy_is_its_observed_rate():
    rng = np.random.default_rng(7)
    true = rng.uniform(0.05, 0.5, size=(300, 6))
    features, propensity = simulated_log(rng, true)
    bootstrap = Bootstrap(features.test["context_id"].to_numpy(), 100, 0)
    choice = true.argsort(axis=1)[:, ::-1][:, :2]
    rows, draws = estimates_for(features, propensity, lists(choice), [1, 2], bootstrap=bootstrap)
    assert set(draws) == {f"{name}@{k}" for name in ESTIMATORS for k in (1, 2)}
    assert all(len(values) == 100 for values in draws.values())
    model = CrossFittedRewardModel("item_mean", 1, 0).fit(features)
    logged = LoggedTestEvents.build(features, propensity, model)
    own, own_draws = logging_policy_estimates(logged, SETTINGS, [1, 2], bootstrap, 0)
    assert (own["value"] == features.test["response"].mean()).all() and set(own["estimator"]) == {"observed"}
    # The logging policy's draws follow the order of its observed rate on each shared resample (recomputed here from
    # the weights): the pairing with other policies' draws; their percentile interval is its reported interval.
    weights = bootstrap.weights.astype(float)
    expected = weights @ features.test["response"].to_numpy() / weights.sum(axis=1)
    drawn = own_draws["observed@1"]
    assert (np.sign(np.subtract.outer(expected, expected)) * np.sign(np.subtract.outer(drawn, drawn)) >= 0).all()
    assert np.percentile(drawn, [2.5, 97.5]) == pytest.approx(own.iloc[0][["low", "high"]].to_numpy(float), abs=1e-12)
    middle = np.sort(drawn)[[len(drawn) // 2 - 1, len(drawn) // 2]]
    assert middle[0] <= own.iloc[0]["value"] <= middle[1]


def test_summary_against_truth_per_k():
    estimates = pd.DataFrame({"seed": [1, 2, 1, 2], "fold": 0, "policy": "A", "k": [1, 1, 5, 5], "estimator": "IPS",
                              "value": [0.1, 0.3, 0.2, np.nan], "low": [0.0, 0.25, 0.1, 0.0],
                              "high": [0.2, 0.35, 0.3, 1.0], "matched_events": 10, "effective_sample_size": 10.0,
                              "reliable": [True, False, True, False]})
    truth = pd.DataFrame({"seed": [1, 2, 1, 2], "fold": 0, "policy": "A", "k": [1, 1, 5, 5], "truth": 0.2})
    summary = summarise_against_truth(estimates, truth).set_index(["policy", "k", "estimator"])
    assert summary.loc[("A", 1, "IPS"), "rmse"] == pytest.approx(0.1)
    assert summary.loc[("A", 1, "IPS"), "coverage"] == 0.5 and summary.loc[("A", 1, "IPS"), "unreliable_cases"] == 1
    assert summary.loc[("ALL", 5, "IPS"), "cases"] == 1 and summary.loc[("ALL", 5, "IPS"), "undefined_cases"] == 1


def test_snips_without_any_matched_event_is_undefined_with_the_whole_range():
    log = hand_made_log()
    log.target = np.zeros(6)
    result = estimate(ESTIMATORS["SNIPS"](), log, None, np.arange(4), "x")
    assert np.isnan(result.value) and (result.low, result.high) == (0.0, 1.0)


def test_pipeline_writes_estimates_logging_rows_and_a_decision(byo_config, write_config, tiny_settings):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    tiny_settings["policies"] = {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}}
    tiny_settings["seeds"] = [1, 2]
    outcome = run_pipeline(load_config(write_config(tiny_settings)), progress=False)
    estimates = pd.read_csv(outcome.path / "off_policy.csv")
    k = outcome.decision["k"]
    per_seed = {"Random": len(ESTIMATORS) * 2, "LinUCB": len(ESTIMATORS) * 2, "Logging": 2}
    assert estimates.groupby("policy").size().to_dict() == {p: 2 * n for p, n in per_seed.items()}
    assert set(estimates["k"]) == {1, k}
    decision = json.loads((outcome.path / "decision.json").read_text())
    assert decision["metric"] == f"true_ctr@{k}" and decision["metric_kind"] == "truth"
    assert {"policy", "reason", "metric"} <= set(decision)
    assert {row["policy"] for row in decision["policies"]} == {"Random", "LinUCB", "Logging"}

    no_propensity = run_pipeline(load_config(byo_config()), progress=False)
    run = json.loads((no_propensity.path / "run.json").read_text())
    assert any("off-policy estimates skipped" in note for note in run["notes"])
    assert not (no_propensity.path / "off_policy.csv").exists()
    assert json.loads((no_propensity.path / "decision.json").read_text())["metric_kind"] == "replay"


def test_estimated_propensities_recover_a_context_dependent_logger():
    """A softmax logger in the context (item 0 favoured for large x, item 2 for small): the fitted model finds it
    (test log loss below the frequencies'), and its propensities are close to the true ones computed here."""
    rng = np.random.default_rng(8)
    from pipeline.offpolicy.logging_model import LoggingPolicyModel

    n = 4000
    x = rng.normal(size=n)
    logits = 1.5 * x[:, None] * np.array([1.0, 0.0, -1.0])
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    shown = np.array([rng.choice(3, p=row) for row in true])
    contexts = pd.DataFrame({"context_id": np.arange(n), "x": x})
    frame = pd.DataFrame({"context_id": np.arange(n), "item_id": shown, "response": 0, "event_id": np.arange(n)})
    features = FoldFeatures(contexts, frame.iloc[:3000], frame.iloc[3000:], None)
    model = LoggingPolicyModel(0).fit(features, [0, 1, 2])
    report = model.fit_report(features.test)
    assert report["test_log_loss"] < report["frequency_log_loss"] < report["uniform_log_loss"] + 1e-9
    estimated = model.propensity(np.arange(3000, n), shown[3000:])
    assert np.abs(estimated - true[np.arange(3000, n), shown[3000:]]).mean() < 0.04


def test_pipeline_with_estimated_propensities(byo_config):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    outcome = run_pipeline(load_config(byo_config(data__files__columns__propensity="estimate")), progress=False)
    fit = pd.read_csv(outcome.path / "logging_model.csv")
    assert fit["model"].iloc[0].startswith("multinomial") and (fit["test_log_loss"] > 0).all()
    assert outcome.decision["metric_kind"] == "off_policy"
    run = json.loads((outcome.path / "run.json").read_text())
    assert any("they are estimated per fold" in note for note in run["notes"])
    assert set(pd.read_csv(outcome.path / "off_policy.csv")["policy"]) >= {"Logging", "LinUCB"}


def test_an_external_policy_file_is_evaluated_like_the_same_policy_run_here(byo_config, tmp_path):
    """A file giving Random's action probabilities (1/n for every item in every slot of every event) must give
    exactly the estimates of the Random policy run here, for the first item and the list."""
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    config_path = byo_config(data__files__columns__propensity="estimate")
    config = load_config(config_path)
    interactions = pd.read_csv(config.data.files.interactions)
    items = pd.read_csv(config.data.files.item_features)["item_id"]
    rows = np.arange(1, len(interactions) + 1)
    uniform = pd.DataFrame({"row": np.repeat(rows, len(items)), "item_id": np.tile(items, len(rows)),
                            "position": 0, "probability": 1 / len(items)})
    slots = pd.concat([uniform.assign(position=p) for p in range(5)])
    slots.to_csv(tmp_path / "uniform.csv", index=False)
    config = load_config(config_path, ["evaluation.external_policies.Outside.file=" + str(tmp_path / "uniform.csv"),
                                       "policies={Random: {learning_policy: Random}}"])
    outcome = run_pipeline(config, progress=False)
    estimates = outcome.off_policy.set_index(["policy", "k", "estimator"])["value"]
    for k in (1, 5):
        for name in ("IPS", "SNIPS"):
            assert estimates[("Outside", k, name)] == pytest.approx(estimates[("Random", k, name)], rel=1e-9), (k, name)
    assert "Outside" in outcome.leaderboard.index
    assert {row["policy"] for row in outcome.decision["policies"]} >= {"Outside", "Random", "Logging"}


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="probability"), "has no column 'probability'"),
    (lambda f: f.assign(probability=f["probability"] * 2), "must sum to 1"),
    (lambda f: f.assign(row=f["row"] + 10_000), "must name data rows 1 to"),
    (lambda f: f.assign(probability=f["probability"].where(f.index != 3)), "row 4 holds an empty cell"),
    (lambda f: f.assign(row=f["row"].astype(float).where(f.index != 5, 2.5)), "row 6 holds 2.5"),
    (lambda f: f.assign(item_id=f["item_id"].where(f.index != 3, 999_999)), "not in the catalog"),
    (lambda f: f[f["row"] != f["row"].max()], "gives no probabilities for"),  # the last row is a test event
])
def test_external_policy_file_mistakes_are_named(byo_config, tmp_path, change, message):
    from pipeline.config import load_config
    from pipeline.errors import DataError
    from pipeline.runner import run_pipeline

    config_path = byo_config(data__files__columns__propensity="estimate")
    config = load_config(config_path)
    interactions = pd.read_csv(config.data.files.interactions)
    items = pd.read_csv(config.data.files.item_features)["item_id"].head(2)
    rows = np.arange(1, len(interactions) + 1)
    frame = pd.DataFrame({"row": np.repeat(rows, 2), "item_id": np.tile(items, len(rows)), "probability": 0.5})
    change(frame).to_csv(tmp_path / "p.csv", index=False)
    config = load_config(config_path, [f"evaluation.external_policies.Outside.file={tmp_path / 'p.csv'}",
                                       "policies={Random: {learning_policy: Random}}"])
    with pytest.raises(DataError, match=message) as error:
        run_pipeline(config, progress=False)
    assert "evaluation.external_policies.Outside.file" in str(error.value)
