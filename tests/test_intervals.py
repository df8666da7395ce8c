"""Off-policy intervals, draws, diagnostics and the estimator choice, against references computed here."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.config import OffPolicyConfig
from pipeline.offpolicy import ESTIMATORS, LoggedFeedback
from pipeline.offpolicy.diagnostics import overlap
from pipeline.offpolicy.intervals import estimate, gamma_interval
from pipeline.offpolicy.selection import choose_estimator
from pipeline.uncertainty import Bootstrap


def feedback(target, propensity, reward, direct=None, reward_hat=None, contexts=None) -> LoggedFeedback:
    n = len(reward)
    context = np.arange(n) if contexts is None else contexts
    return LoggedFeedback(context=context, reward=np.asarray(reward, float), propensity=np.asarray(propensity, float),
                          target=np.asarray(target, float),
                          reward_hat=np.zeros(n) if reward_hat is None else np.asarray(reward_hat, float),
                          direct=np.zeros(n) if direct is None else np.asarray(direct, float),
                          n_contexts=int(context.max()) + 1)


@pytest.mark.parametrize("clicks", [0, 1, 4, 30])
def test_the_gamma_interval_with_equal_weights_is_the_exact_poisson_interval(clicks):
    """With every coefficient equal to c, Y = c X with X Poisson: Fay and Feuer's interval is Garwood's exact one,
    ``c chi2_{2x}(2.5%) / 2`` to ``c chi2_{2(x+1)}(97.5%) / 2`` (computed here with scipy's chi-square)."""
    c = 0.01
    low, high = gamma_interval(c * clicks, c * c * clicks, c)
    exact_low = 0.0 if clicks == 0 else c * stats.chi2.ppf(0.025, 2 * clicks) / 2
    assert low == pytest.approx(exact_low, rel=1e-9, abs=1e-15)
    assert high == pytest.approx(c * stats.chi2.ppf(0.975, 2 * (clicks + 1)) / 2, rel=1e-9)


def test_no_click_among_matched_events_still_has_an_upper_bound():
    """Five matched events of weight 20 in 1,000, none clicked: IPS is 0 and its interval reaches what one typical
    matched click could add under the exact Poisson bound, -ln(0.025) x 20 / 1000."""
    n = 1000
    target = np.zeros(n)
    target[:5] = 1.0
    result = estimate(ESTIMATORS["IPS"](), feedback(target, np.full(n, 0.05), np.zeros(n)), None, np.arange(n), "x")
    assert result.value == 0 and result.low == 0
    assert result.high == pytest.approx(-np.log(0.025) * 20 / n, rel=1e-9)


def test_without_any_matched_event_the_interval_is_the_whole_range_and_self_normalised_ones_are_undefined():
    n = 50
    data = feedback(np.zeros(n), np.full(n, 0.1), np.ones(n), direct=np.full(n, 0.3), reward_hat=np.full(n, 0.3))
    dr = estimate(ESTIMATORS["DR"](), data, None, np.arange(n), "x")
    assert dr.value == pytest.approx(0.3) and (dr.low, dr.high) == (0.0, 1.0)
    for name in ("SNIPS", "SNDR"):  # SNDR's formula divides by the weights' sum: no silent direct method
        result = estimate(ESTIMATORS[name](), data, None, np.arange(n), "x")
        assert np.isnan(result.value) and (result.low, result.high) == (0.0, 1.0), name


def test_a_point_outside_the_range_is_cut_with_its_interval():
    """A DR estimate below 0 (the reward model over-predicts the matched clicks away): the reported value and
    interval are cut to [0, 1] together, and the uncut value is kept as raw_value."""
    n = 400
    rng = np.random.default_rng(1)
    target = (rng.random(n) < 0.1).astype(float)
    data = feedback(target, np.full(n, 0.1), np.zeros(n), direct=np.full(n, 0.02), reward_hat=np.full(n, 0.9))
    result = estimate(ESTIMATORS["DR"](), data, None, np.arange(n), "x")
    expected = np.mean(0.02 + target / 0.1 * (0 - 0.9))
    assert result.raw_value == pytest.approx(expected) and expected < 0
    assert result.value == 0.0 and result.low == 0.0 and result.low <= result.value <= result.high


def test_draws_of_different_folds_are_independent_even_on_identical_data():
    """The noise that breaks ties and the resampling weights are seeded by (seed, fold, label): the same feedback on
    folds 0 and 1 of one seed gives uncorrelated draws (identical ones for the same fold), and every fold's draws
    have the estimate's interval as their percentile interval."""
    rng = np.random.default_rng(2)
    n = 3000
    target = (rng.random(n) < 0.02).astype(float)  # a sparse policy: few matched events, many tied resamples
    data = feedback(target, np.full(n, 0.02), (rng.random(n) < 0.1).astype(float))
    contexts = np.arange(n)
    draws = {}
    for fold in (0, 1):
        result = estimate(ESTIMATORS["IPS"](), data, Bootstrap(contexts, 400, 7, fold), contexts, "P/IPS@1")
        draws[fold] = result.draws
        assert np.percentile(result.draws, [2.5, 97.5]) == pytest.approx([result.low, result.high], abs=1e-12)
    again = estimate(ESTIMATORS["IPS"](), data, Bootstrap(contexts, 400, 7, 0), contexts, "P/IPS@1").draws
    assert np.array_equal(again, draws[0])
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.2  # 0.05 is one standard error under independence


def test_the_mean_weight_flags_a_target_whose_mass_the_log_never_matched():
    """An epsilon-greedy target (0.9 on an item the logger shows with probability 0.0002, 0.1 spread over the others):
    in this sample of 2,000 events the greedy item was never drawn, the weights average about 0.1 where they should
    average 1, and the estimate is flagged, though its effective sample size and largest weight look fine."""
    rng = np.random.default_rng(3)
    n, items = 2000, 100
    logger = np.full(items, (1 - 0.0002) / (items - 1))
    logger[0] = 0.0002
    shown = rng.choice(items, size=n, p=logger)
    assert (shown != 0).all()
    target = np.where(shown == 0, 0.9 + 0.1 / items, 0.1 / items)
    data = feedback(target, logger[shown], (rng.random(n) < 0.3).astype(float))
    found = overlap(data, np.zeros(n), OffPolicyConfig())
    assert found["mean_weight"] == pytest.approx(data.weight.mean())
    assert found["mean_weight_high"] < 0.9 and not found["reliable"] and "mean weight" in found["flag"]
    assert found["effective_sample_size"] > 30 and found["max_weight_share"] < 0.2
    uniform = feedback(np.full(n, 1 / items), np.full(n, 1 / items), (rng.random(n) < 0.3).astype(float))
    assert overlap(uniform, np.zeros(n), OffPolicyConfig())["reliable"]


def test_the_estimator_choice_takes_the_smallest_estimated_mse():
    """Variance plus squared bias per policy, averaged over the candidate policies (the logging policy's observed row
    does not count); an estimator undefined for a policy is not a candidate."""
    rows = pd.DataFrame([
        ("A", "IPS", 0.10, 0.020, 0.0), ("B", "IPS", 0.05, 0.010, 0.0),
        ("A", "SNIPS", 0.11, 0.015, 0.005), ("B", "SNIPS", 0.05, 0.008, 0.002),
        ("A", "DR", 0.10, 0.030, 0.0), ("B", "DR", 0.05, 0.002, 0.0),
        ("A", "SNDR", np.nan, np.nan, np.nan), ("B", "SNDR", 0.05, 0.001, 0.0),
        ("Logging", "observed", 0.05, 0.0001, 0.0)], columns=["policy", "estimator", "value", "se", "bias"])
    rows["k"] = 5
    choice = choose_estimator(rows, 5, ["IPS", "SNIPS", "DR", "SNDR"])
    expected = {"IPS": (0.02 ** 2 + 0.01 ** 2) / 2, "SNIPS": (0.015 ** 2 + 0.005 ** 2 + 0.008 ** 2 + 0.002 ** 2) / 2,
                "DR": (0.03 ** 2 + 0.002 ** 2) / 2}
    assert choice["estimator"] == min(expected, key=expected.get) == "SNIPS"
    assert choice["estimated_rmse"] == pytest.approx({name: np.sqrt(v) for name, v in expected.items()})
    assert "SNDR" not in choice["estimated_rmse"] and "smallest estimated root mean squared error" in choice["reason"]


def test_one_interval_per_quantity_in_every_table(write_config, tiny_settings):
    """A softmax-logged run decided off-policy: the decision table, off_policy_pooled.csv and (on one fold) every
    off_policy.csv row give one interval per quantity, and each contains its value; on two folds the pooled
    interval is the percentile interval of the fold draws averaged resample by resample."""
    from pipeline.config import load_config
    from pipeline.pooling import pooled_draws, with_logging_draws
    from pipeline.runner import run_pipeline

    tiny_settings["data"]["synthetic"]["logging"] = "softmax"
    tiny_settings["policies"] = {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"},
                                 "LinGreedy": {"learning_policy": "LinGreedy"}}
    tiny_settings["evaluation"]["decision"] = {"metric": "off_policy"}
    for split in ({"method": "temporal"}, {"method": "kfold", "n_folds": 2}):
        tiny_settings["split"] = split
        outcome = run_pipeline(load_config(write_config(tiny_settings)), progress=False)
        rows = pd.read_csv(outcome.path / "off_policy.csv")
        pooled = pd.read_csv(outcome.path / "off_policy_pooled.csv")
        for frame in (rows, pooled):
            defined = frame[frame["value"].notna()]
            assert ((defined["low"] <= defined["value"]) & (defined["value"] <= defined["high"])).all()
        name, k = outcome.decision["metric"].split("@")
        table = pd.read_csv(outcome.path / "decision.csv").set_index("policy")
        at_k = pooled[(pooled["k"] == int(k)) & pooled["estimator"].isin([name, "observed"])].set_index("policy")
        assert table[["value", "low", "high"]].to_numpy() == pytest.approx(
            at_k.loc[table.index, ["value", "low", "high"]].to_numpy(), abs=1e-6)
        if split["method"] == "temporal":
            merged = rows.merge(pooled, on=["policy", "k", "estimator"], suffixes=("", "_pooled"))
            merged = merged[merged["value"].notna()]
            assert merged[["low", "high"]].to_numpy() == pytest.approx(
                merged[["low_pooled", "high_pooled"]].to_numpy(), abs=1e-6)  # float32 draws
        else:
            draws = pd.read_parquet(outcome.path / "draws.parquet")
            mean = pooled_draws(with_logging_draws(draws, f"{name}@{k}"), f"{name}@{k}").loc["LinUCB"].to_numpy()
            assert at_k.loc["LinUCB", ["low", "high"]].to_numpy(float) == pytest.approx(
                np.clip(np.percentile(mean, [2.5, 97.5]), 0, 1), abs=1e-6)
